"""Tiny causal LMs and tokenizers built in memory (no files, no network) for tests."""
from __future__ import annotations

CORPUS = [
    "the cat sat on the mat", "a dog ran in the park\t7\n", "numbers 0 1 2 3 4 5 6 7 8 9 10",
    "Activations:\ncat\t3\ndog\t5\n", "The quick brown fox jumps over the lazy dog.",
]


def make_tiny_tokenizer(bos: bool = False):
    """A byte-level BPE tokenizer trained in memory (no files, no network)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=330, special_tokens=["<|end|>", "<s>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(CORPUS * 20, tr)
    kw = {}
    if bos:
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tk.token_to_id("<s>"))])
        kw["bos_token"] = "<s>"
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|end|>",
                                   pad_token="<|end|>", **kw)


def make_tiny_model(tok, arch: str = "llama", max_positions: int = 256, seed: int = 0):
    """A tiny random causal LM over ``tok``'s vocabulary."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=max_positions, tie_word_embeddings=False,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                          bos_token_id=None)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4,
                         n_positions=max_positions, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        model = GPT2LMHeadModel(cfg)
    return model.eval()
