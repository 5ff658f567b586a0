// Static search over units, explanations, concept labels and descriptors (no server, works from file://).
(function () {
  var root = document.body.getAttribute('data-root') || '';
  var box = document.getElementById('search');
  var list = document.getElementById('search-results');
  var data = window.TL_SEARCH || [];
  function show(q) {
    while (list.firstChild) { list.removeChild(list.firstChild); }
    q = q.trim().toLowerCase();
    if (!q) { list.classList.remove('open'); return; }
    var n = 0;
    for (var i = 0; i < data.length && n < 40; i++) {
      var d = data[i];
      if ((d.n + ' ' + d.x).toLowerCase().indexOf(q) < 0) { continue; }
      var li = document.createElement('li');
      var k = document.createElement('span'); k.className = 'kind'; k.textContent = d.k;
      var a = document.createElement('a'); a.href = root + d.u; a.textContent = d.n + (d.x ? ': ' + d.x : '');
      li.appendChild(k); li.appendChild(a); list.appendChild(li); n++;
    }
    if (!n) { var e = document.createElement('li'); e.className = 'muted'; e.textContent = 'no match'; list.appendChild(e); }
    list.classList.add('open');
  }
  if (box && list) {
    box.addEventListener('input', function () { show(box.value); });
    box.addEventListener('keydown', function (ev) { if (ev.key === 'Escape') { box.value = ''; show(''); } });
    var m = /[?&]q=([^&]*)/.exec(window.location.search);  // index.html?q=word opens the search
    if (m) { box.value = decodeURIComponent(m[1]); show(box.value); }
  }
  document.body.setAttribute('data-ready', '1');
})();
