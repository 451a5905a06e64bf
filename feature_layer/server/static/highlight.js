/* A tiny SQL (+ Jinja) and Python highlighter: one regex tokenizer, no dependencies. */
(function () {
  "use strict";
  const SQL_KEYWORDS = new Set((
    "select from where group by order having limit offset join left right inner outer full cross on using as and or not " +
    "in is null case when then else end with union all distinct over partition window rows range between preceding " +
    "following current row unbounded asc desc nulls first last interval cast insert into values create table view " +
    "replace qualify exists like ilike true false filter within lateral natural except intersect recursive"
  ).split(" "));
  const SQL_TYPES = new Set("bigint int integer smallint double float real decimal numeric varchar text string boolean bool date timestamp timestamptz time hugeint".split(" "));
  const PY_KEYWORDS = new Set("from import as def return class if else elif for in while with try except finally raise None True False and or not is lambda pass yield print".split(" "));

  function esc(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  const SQL_RE = /(\{\{[\s\S]*?\}\}|\{%[\s\S]*?%\})|(--[^\n]*|\/\*[\s\S]*?\*\/)|('(?:[^']|'')*')|("(?:[^"]|"")*")|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)(\s*\()?|(\s+)|([^\sA-Za-z0-9_])/g;

  function sql(code) {
    let out = "";
    let m;
    SQL_RE.lastIndex = 0;
    while ((m = SQL_RE.exec(code)) !== null) {
      if (m[1]) out += `<span class="tk-jinja">${esc(m[1])}</span>`;
      else if (m[2]) out += `<span class="tk-comment">${esc(m[2])}</span>`;
      else if (m[3]) out += `<span class="tk-string">${esc(m[3])}</span>`;
      else if (m[4]) out += `<span class="tk-ident">${esc(m[4])}</span>`;
      else if (m[5]) out += `<span class="tk-number">${esc(m[5])}</span>`;
      else if (m[6]) {
        const word = m[6], lower = word.toLowerCase();
        if (m[7] && !SQL_KEYWORDS.has(lower)) out += `<span class="tk-func">${esc(word)}</span>${esc(m[7])}`;
        else if (SQL_KEYWORDS.has(lower)) out += `<span class="tk-kw">${esc(word)}</span>${m[7] ? esc(m[7]) : ""}`;
        else if (SQL_TYPES.has(lower)) out += `<span class="tk-type">${esc(word)}</span>${m[7] ? esc(m[7]) : ""}`;
        else out += esc(word) + (m[7] ? esc(m[7]) : "");
      } else if (m[8]) out += m[8];
      else if (m[9]) out += `<span class="tk-op">${esc(m[9])}</span>`;
    }
    return out;
  }

  const PY_RE = /(#[^\n]*)|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)(\s*\()?|(\s+)|([^\sA-Za-z0-9_])/g;

  function python(code) {
    let out = "";
    let m;
    PY_RE.lastIndex = 0;
    while ((m = PY_RE.exec(code)) !== null) {
      if (m[1]) out += `<span class="tk-comment">${esc(m[1])}</span>`;
      else if (m[2]) out += `<span class="tk-string">${esc(m[2])}</span>`;
      else if (m[3]) out += `<span class="tk-number">${esc(m[3])}</span>`;
      else if (m[4]) {
        const word = m[4];
        if (PY_KEYWORDS.has(word)) out += `<span class="tk-kw">${esc(word)}</span>${m[5] ? esc(m[5]) : ""}`;
        else if (m[5]) out += `<span class="tk-func">${esc(word)}</span>${esc(m[5])}`;
        else if (/^[A-Z]/.test(word)) out += `<span class="tk-type">${esc(word)}</span>`;
        else out += esc(word);
      } else if (m[6]) out += m[6];
      else if (m[7]) out += `<span class="tk-op">${esc(m[7])}</span>`;
    }
    return out;
  }

  window.Highlight = { sql, python, esc };
})();
