"""Model output and imported prompts are untrusted. Before they reach st.markdown they pass
through `inert_markdown`: formatting (lists, emphasis, code) survives, but nothing can fetch a
remote resource, run script, or be clicked.

Streamlit already shows raw HTML as text when unsafe_allow_html is off; this removes what
markdown itself can do: images (a request to any host, a tracking pixel), links (javascript:, phishing),
and autolinks.
"""
from __future__ import annotations

import re

_ZWSP = "\u200b"  # zero-width space: breaks link detection without changing what people read

# ![alt](url) and [text](url) -> keep the words, show the address as plain text.
_INLINE = re.compile(r"(!?)\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^\n]*?[\"'])?\s*\)")
# [id]: url  (reference definitions, which turn [text][id] into links)
_REFERENCE_DEF = re.compile(r"^( {0,3})\[([^\]\n]+)\]:", re.M)
# What GFM turns into links by itself: scheme://..., www...., e-mail addresses; plus the schemes
# that run or embed things.
_SCHEME = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]{1,20}):(?=//)|\b(javascript|vbscript|data|mailto|file):", re.I)
_WWW = re.compile(r"\bwww\.", re.I)
# A line that is only a number and a full stop ("84.") is an empty ordered-list item in markdown:
# the answer would show as a bare bullet. Escaped, it reads as written.
_BARE_NUMBER = re.compile(r"^( {0,3})(\d{1,9})([.)])[ \t]*$", re.M)


def _defang(text: str) -> str:
    text = _SCHEME.sub(lambda m: (m.group(1) or m.group(2)) + _ZWSP + ":", text)
    return _WWW.sub(lambda m: m.group(0)[:3] + _ZWSP + ".", text).replace("@", "@" + _ZWSP)


def inert_markdown(text: str) -> str:
    def inline(m: re.Match) -> str:
        bang, words, url = m.groups()
        kind = "image" if bang else "link"
        shown = words.replace("[", r"\[").replace("]", r"\]")
        return f"{shown} [{kind}: {_defang(url)}]" if url else shown

    text = _BARE_NUMBER.sub(lambda m: f"{m.group(1)}{m.group(2)}\\{m.group(3)}", text)
    text = _INLINE.sub(inline, text)
    text = _REFERENCE_DEF.sub(lambda m: f"{m.group(1)}\\[{m.group(2)}\\]:", text)
    # Any scheme, www. or address left (bare autolinks, <http://...>) stops being a link. Raw
    # HTML needs nothing here: without unsafe_allow_html Streamlit shows tags as text.
    return _defang(text)
