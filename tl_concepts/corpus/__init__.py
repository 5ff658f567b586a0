"""Text sources and their sentence / word structure; the embedded Lee corpus and gold classes."""
from tl_concepts.corpus.embedded import gold_word_categories, lee_corpus
from tl_concepts.corpus.sources import from_dataset, from_file, from_texts, load_corpus, split_sentences
from tl_concepts.corpus.types import Corpus, Sentence

__all__ = ["Corpus", "Sentence", "from_dataset", "from_file", "from_texts", "gold_word_categories",
           "lee_corpus", "load_corpus", "split_sentences"]
