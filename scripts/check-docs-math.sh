#!/usr/bin/env bash
# Checks that every formula of the built Doxygen HTML renders: opens each page that holds a
# formula in headless Chromium (Debian package `chromium`) with the same local MathJax 2 a
# reader gets, waits until MathJax has typeset the page, and fails on any MathJax error
# ("Undefined control sequence", other TeX parse errors, "[Math Processing Error]", a MathJax
# file that failed to load, a formula left unrendered or as raw \( \[ \f$ text, MathJax not
# loading at all). Doxygen's own warnings cannot see these: they happen in the browser.
#
#   bash scripts/check-docs-math.sh [build-dir]      # default build/release
#
# build-dir is the CMake build directory the `docs` target was built in (the pages are in
# <build-dir>/docs/html), or that html directory itself. Prints "page: error" for each failing
# formula and "docs-math: N pages checked, M failed" at the end; exits non-zero if M > 0.
# CHROMIUM=/path/to/browser overrides the browser; DOCS_MATH_JOBS the number of browsers run
# in parallel (default: the number of cores, at most 4).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build/release}

if [[ -f $build/index.html ]]; then html=$build
elif [[ -f $build/docs/html/index.html ]]; then html=$build/docs/html
else
  echo "check-docs-math: no Doxygen HTML in $build (expected $build/docs/html/index.html);" \
       "build it first: cmake --build <build-dir> --target docs" >&2
  exit 2
fi
html=$(cd "$html" && pwd)

browser=${CHROMIUM:-}
if [[ -z $browser ]]; then
  for b in chromium chromium-browser; do
    if command -v "$b" >/dev/null; then browser=$(command -v "$b"); break; fi
  done
fi
if [[ -z $browser ]]; then
  echo "check-docs-math: chromium not found; install the Debian package 'chromium'" \
       "(apt-get install chromium, or bash scripts/install-deps.sh)" >&2
  exit 2
fi

# The pages that hold formulas: Doxygen writes them for MathJax as \( \), \[ \] and
# \begin{env} text. A page that holds one of these but no formula is checked harmlessly.
pages=()
while IFS= read -r f; do pages+=("$f"); done < <(
  find "$html" -maxdepth 1 -name '*.html' -print0 | xargs -0 grep -lF -e '\(' -e '\[' -e '\begin{' | sort)
if ((${#pages[@]} == 0)); then
  echo "check-docs-math: no page in $html holds a MathJax formula (docs built without USE_MATHJAX?)" >&2
  echo "docs-math: 0 pages checked, 0 failed"
  exit 1
fi

jobs=${DOCS_MATH_JOBS:-$(nproc 2>/dev/null || echo 2)}
((jobs > 4)) && jobs=4
((jobs > ${#pages[@]})) && jobs=${#pages[@]}
((jobs < 1)) && jobs=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The harness page loads the pages one after another into an iframe (file:// pages may read
# each other with --allow-file-access-from-files), waits until MathJax reports the page
# typeset, inspects it, and writes one line per page and per error into <pre id="result">,
# which --dump-dom prints. Virtual time makes MathJax's timers run without real waiting; the
# budget only bounds a page that does not load or whose MathJax never finishes (each reported
# as such after 60 s of virtual time, which passes in well under a second of real time).
cat >"$work/harness.js" <<'EOF'
"use strict";
var out = [], i = 0;
var frame = document.getElementById("page");
function short(s) {
  s = String(s).replace(/\s+/g, " ").trim();
  return s.length > 160 ? s.slice(0, 157) + "..." : s;
}
function texOf(script) { return script ? short(script.text || script.textContent || "") : "?"; }
function finish() {
  out.push("END");
  document.getElementById("result").textContent = out.join("\n");
}
function next() {
  if (i >= PAGES.length) { finish(); return; }
  var name = PAGES[i++];
  var started = false;
  frame.onload = function () {
    var href = "";
    try { href = decodeURIComponent(frame.contentWindow.location.href); } catch (e) {}
    if (started || href.slice(-name.length - 1) !== "/" + name) return;   // e.g. the initial about:blank
    started = true;
    wait(name, frame.contentWindow, 0);
  };
  frame.src = BASE + encodeURIComponent(name);
  setTimeout(function () {
    if (started) return;
    started = true;
    out.push("ERR\t" + name + "\tthe page did not load"); out.push("PAGE\t" + name + "\t0");
    next();
  }, 60000);
}
function wait(name, w, n) {
  var MJ = null;
  try { MJ = w.MathJax; } catch (e) {
    out.push("ERR\t" + name + "\tcannot inspect the page: " + e.message); out.push("PAGE\t" + name + "\t0");
    next(); return;
  }
  if (MJ && MJ.isReady && MJ.Hub && MJ.Hub.Queue) {
    MJ.Hub.Queue(function () { setTimeout(function () { inspect(name, w); next(); }, 0); });
    return;
  }
  if (n >= 600) {                      // 60 s of virtual time
    out.push("ERR\t" + name + "\t" + (MJ && MJ.Hub ? "MathJax did not finish typesetting the page"
                                                    : "MathJax did not load (is MATHJAX_RELPATH right?)"));
    out.push("PAGE\t" + name + "\t0");
    next(); return;
  }
  setTimeout(function () { wait(name, w, n + 1); }, 100);
}
function inspect(name, w) {
  var d = w.document, MJ = w.MathJax, errs = [], seen = {};
  function err(msg) { if (!seen[msg]) { seen[msg] = true; errs.push(msg); } }
  // 1. What MathJax itself reported: TeX parse errors, processing errors, files that failed.
  var posted = (MJ.Hub.signal && MJ.Hub.signal.posted) || [];
  for (var k = 0; k < posted.length; k++) {
    var m = posted[k];
    if (!(m instanceof Array) || typeof m[0] !== "string") continue;
    if (m[0] === "TeX Jax - parse error") err(m[1] + " in: " + short(m[2]));
    else if (m[0] === "Math Processing Error") err("[Math Processing Error] " + (m[2] && m[2].message) + " in: " + texOf(m[1]));
    else if (m[0] === "file load error") err("MathJax file failed to load: " + m[1]);
    else if (/error/i.test(m[0])) err(m[0] + ": " + short(m.slice(1).join(" ")));
  }
  // MathJax files (extensions, jax, fonts) that failed to load: the error is not always posted.
  var loaded = (MJ.Ajax && MJ.Ajax.loaded) || {}, failed = MJ.Ajax && MJ.Ajax.STATUS ? MJ.Ajax.STATUS.ERROR : -1;
  for (var f in loaded) if (loaded[f] === failed) err("MathJax file failed to load: " + f);
  // Extensions that turn errors into plain-looking output would hide them from this check.
  ["TeX/noErrors", "TeX/noUndefined"].forEach(function (x) {
    if (MJ.Extension && MJ.Extension[x]) err("MathJax extension " + x + " is loaded: it hides TeX errors");
  });
  // 2. What the page shows: every math script has a rendered frame, no error frames.
  var scripts = d.querySelectorAll('script[type^="math/tex"]');
  for (var s = 0; s < scripts.length; s++) {
    var sc = scripts[s], fr = sc.id ? d.getElementById(sc.id + "-Frame") : null;
    if (!fr) { err("formula not rendered: " + texOf(sc)); continue; }
    if (/\bMathJax_Error\b/.test(fr.className)) err("[Math Processing Error] in: " + texOf(sc));
    var me = fr.querySelector(".merror");
    if (me) err(short(me.textContent) + " in: " + texOf(sc));
  }
  // 3. Formula text MathJax did not pick up (unbalanced delimiters, Doxygen left \f$ as text).
  var tw = d.createTreeWalker(d.body, w.NodeFilter.SHOW_TEXT, {
    acceptNode: function (t) {
      for (var p = t.parentNode; p && p !== d.body; p = p.parentNode) {
        if (/^(SCRIPT|STYLE|TEXTAREA|PRE|CODE)$/.test(p.nodeName)) return w.NodeFilter.FILTER_REJECT;
        if (p.classList && (p.classList.contains("fragment") || p.classList.contains("MathJax_Preview")))
          return w.NodeFilter.FILTER_REJECT;
      }
      return w.NodeFilter.FILTER_ACCEPT;
    }
  });
  for (var t = tw.nextNode(); t; t = tw.nextNode()) {
    var v = t.nodeValue, at = v.search(/\\[\(\)\[\]]|\\begin\{|\\end\{|\\f[\$\[\]\{\}]/);
    if (at >= 0) err("raw formula text left on the page: " + short(v.slice(Math.max(0, at - 20), at + 80)));
  }
  for (var e = 0; e < errs.length; e++) out.push("ERR\t" + name + "\t" + errs[e]);
  out.push("PAGE\t" + name + "\t" + scripts.length);
}
next();
EOF

# Split the pages round-robin over $jobs browsers.
for ((j = 0; j < jobs; j++)); do
  {
    printf '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>docs-math</title></head><body>\n'
    printf '<pre id="result">RUNNING</pre>\n'
    printf '<iframe id="page" style="width:1280px;height:1000px;border:0"></iframe>\n<script>\n'
    printf 'var BASE = "file://%s/";\nvar PAGES = [\n' "$html"
    for ((k = j; k < ${#pages[@]}; k += jobs)); do
      name=${pages[k]##*/}
      name=${name//\\/\\\\}
      printf '  "%s",\n' "${name//\"/\\\"}"
    done
    printf '];\n</script>\n<script src="harness.js"></script>\n</body></html>\n'
  } >"$work/harness-$j.html"
done

start=$SECONDS
pids=()
for ((j = 0; j < jobs; j++)); do
  mkdir -p "$work/profile-$j"
  n=$(grep -c '^  "' "$work/harness-$j.html")
  timeout 900 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-default-apps --disable-extensions --mute-audio --hide-scrollbars \
    --allow-file-access-from-files --user-data-dir="$work/profile-$j" \
    --virtual-time-budget=$((n * 130000 + 30000)) \
    --dump-dom "file://$work/harness-$j.html" >"$work/dom-$j.html" 2>"$work/log-$j.txt" &
  pids+=($!)
done
for ((j = 0; j < jobs; j++)); do
  rc=0
  wait "${pids[j]}" || rc=$?
  if ((rc != 0)); then
    echo "check-docs-math: $browser exited with status $rc; its log:" >&2
    tail -n 20 "$work/log-$j.txt" >&2
  fi
done

# Pull the result lines out of the dumped DOM and undo its HTML escaping.
: >"$work/result.txt"
for ((j = 0; j < jobs; j++)); do
  sed -n '/<pre id="result">/,/<\/pre>/p' "$work/dom-$j.html" |
    sed -e 's/^.*<pre id="result">//' -e 's#</pre>.*$##' \
        -e 's/&lt;/</g' -e 's/&gt;/>/g' -e 's/&nbsp;/ /g' -e 's/&quot;/"/g' -e 's/&amp;/\&/g' \
        >"$work/result-$j.txt"
  if ! grep -qx 'END' "$work/result-$j.txt"; then
    # The browser stopped before the harness finished: every page it was given counts as failed.
    grep -o '^  "[^"]*"' "$work/harness-$j.html" | sed 's/^  "\(.*\)"$/\1/' | while IFS= read -r p; do
      grep -q "^PAGE	$p	" "$work/result-$j.txt" ||
        printf 'ERR\t%s\tnot checked: the browser stopped before the page was typeset\nPAGE\t%s\t0\n' "$p" "$p"
    done >"$work/missing-$j.txt"
    cat "$work/missing-$j.txt" >>"$work/result-$j.txt"
  fi
  cat "$work/result-$j.txt" >>"$work/result.txt"
done

checked=$(grep -c '^PAGE	' "$work/result.txt" || true)
formulas=$(awk -F'\t' '$1 == "PAGE" { n += $3 } END { print n + 0 }' "$work/result.txt")
failed=$(awk -F'\t' '$1 == "ERR" { print $2 }' "$work/result.txt" | sort -u | wc -l)
errors=$(grep -c '^ERR	' "$work/result.txt" || true)
awk -F'\t' '$1 == "ERR" { print $2 ": " $3 }' "$work/result.txt" | sort -s -t: -k1,1
echo "docs-math: $formulas formulas, $errors errors, $((SECONDS - start)) s ($html)"
echo "docs-math: $checked pages checked, $failed failed"
((checked == ${#pages[@]} && failed == 0))
