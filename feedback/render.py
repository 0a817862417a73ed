"""Model output and imported prompts are untrusted. Before they reach st.markdown they pass
through `inert_markdown`: formatting (lists, emphasis, code) survives, but nothing can fetch a
remote resource, run script, be clicked, or pose as the app's own styled text.

Streamlit already shows raw HTML as text when unsafe_allow_html is off; this removes what
markdown itself can do: images (a request to any host, a tracking pixel), links (javascript:, phishing),
and autolinks; and what Streamlit adds to markdown: directives (`:red[...]`, `:blue-badge[...]`,
`:small[...]`, `:help[...]`, any `:name[...]`), material icons (`:material/lock:`), the
`:streamlit:` logo, emoji shortcodes (`:smile:`) and math (`$...$`, `$$...$$`). `inert_text` goes
further, for one value inside an app sentence: every character shows as typed.

How Streamlit 1.67's frontend (StreamlitMarkdown) reads these, which decides the escapes below:
- directives are remark-directive syntax: a colon, then a name (see below for what may start one);
- `:material/` is rewritten to `:material_` in the raw source, then `:material_name:` and
  `:streamlit:` are replaced in the parsed text, where backslash escapes and character
  references (`&#58;`) are already resolved, so a backslash before the colon would not help;
- the emoji plugin is only loaded when the raw source matches `:[\\w+-][\\w_+-]*:`;
- the math plugin is only loaded when the raw source, code and `\\$` masked, has `$$...$$` or a
  `$x$` with no space inside either dollar (so "$5 and $6" alone loads nothing).
A zero-width no-break space (U+FEFF) after a colon defeats the first three: no name follows the
colon, in the raw source or the parsed text. It has to be that one: a directive's name may start
with any character but whitespace (JavaScript's \s, which has U+FEFF) and punctuation, so after a
zero-width space (U+200B) the name would be "\u200bred", and Streamlit shows an unknown
directive as ":name" alone, dropping its text. A backslash before each dollar, outside code, keeps
math unloaded.

Links, images and autolinks cannot be recognised reliably with patterns (nested brackets, titles,
reference definitions inside quotes or lists...), so after the readable rewrite of simple ones,
every `[`, `]` and `<` left in prose is backslash-escaped: no link, image, reference, footnote,
autolink or HTML tag can exist. The same goes for colons: in prose every colon gets the U+FEFF
unless whitespace (or another colon) follows it (`:\\+1:` is an emoji once `:_a:` elsewhere loads the plugin).
Code is left alone there, but only where markdown is sure to read code (`_sure_code`): where in
doubt, text counts as prose, so the worst a mistake does is show a backslash in code.
"""
from __future__ import annotations

import re
import unicodedata

_ZWSP = "\u200b"  # zero-width space: breaks link detection without changing what people read
_NO_NAME = "\ufeff"  # zero-width, and whitespace to the directive parser: no name can follow it

# ![alt](url) and [text](url) -> keep the words, show the address as plain text. Words may hold one
# level of brackets; the address may be <in angle brackets>, the title quoted or in parentheses.
_INLINE = re.compile(r"(!?)\[([^\[\]\n]*(?:\[[^\[\]\n]*\][^\[\]\n]*)*)\]"
                     r"\(\s*(?:<([^<>\n]*)>|([^)\s>]*))(?:\s+(?:\"[^\"\n]*\"|'[^'\n]*'|\([^()\n]*\)))?\s*\)")
# What GFM turns into links by itself: scheme://..., www...., e-mail addresses; plus the schemes
# that run or embed things.
_SCHEME = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]{1,20}):(?=//)|\b(javascript|vbscript|data|mailto|file):", re.I)
_WWW = re.compile(r"\bwww\.", re.I)
# A line that is only a number and a full stop ("84.") is an empty ordered-list item in markdown:
# the answer would show as a bare bullet. Escaped, it reads as written.
_BARE_NUMBER = re.compile(r"^( {0,3})(\d{1,9})([.)])[ \t]*$", re.M)

# A colon as a character reference ("&#58;", "&#x3a;", "&colon;") is a colon by the time
# Streamlit looks for icons in the parsed text: make it a real one, which the next rule breaks.
_COLON_REFERENCE = re.compile(r"&(?:#0{0,5}58|#[xX]0{0,4}3[aA]|colon);")
_COLON = re.compile(r":(?=(.))", re.S)
# What Streamlit masks before it looks for math (its frontend's own pattern): fenced code, code
# spans, and the escapes \\ \$ \`. Everything else is prose.
_CODE_OR_ESCAPE = re.compile(r"(?:\A|(?<=\n)) {0,3}(`{3,}|~{3,})[\s\S]*?(?:\n[ \t]*\1|\Z)"
                             r"|(?<!`)(`+)[^`\n]+\2(?!`)|\\[\\$`]")
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"  # JavaScript's \s
_JS_SPACES = {*"\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff",
              *map(chr, range(0x2000, 0x200b))}
_DISPLAY_MATH = re.compile(r"(?<!\$)\$\$+(?!\$)[\s\S]*?\$\$")
_INLINE_MATH = re.compile(rf"(?<!\$)\$(?![{_JS_SPACE}$])[^$\n]*?[^{_JS_SPACE}$]\$(?![0-9])")
_MATH_OR_DOLLAR = re.compile(f"{_DISPLAY_MATH.pattern}|{_INLINE_MATH.pattern}|\\$")
# \( \) \[ \] are LaTeX's math brackets; markdown would eat the backslash.
_LATEX_BRACKET = re.compile(r"\\(?=[()\[\]])")
# What inert_text escapes with a backslash: what opens code, emphasis, links, tables, strikethrough,
# character references and escapes anywhere in a line ("_" only at a word's edge: inside one it
# is no emphasis, and project names have them), and what opens a block at a line's start.
_ANYWHERE = re.compile(r"[`*\[|~<]|\\(?=[!-/:-@\[-`{-~])|&(?=#?\w+;)|(?<![^\W_])_|_(?![^\W_])")
_LINE_START = re.compile(r"^(?:[-+=#>]|\d{1,9}(?=[.)]))")

# What _sure_code reads line by line: a fence that may open (after container markers or not), a
# clean one (no container before it), and what closes it.
_FENCE_LIKE = re.compile(r"[ \t>*+\-0-9.)]*(?:`{3,}|~{3,})")
_CLEAN_FENCE = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)")
_BLANK_LINE = re.compile(r"\n[ \t]*(?=\n)")
_LIVE_IN_PROSE = re.compile(r"\\[\s\S]|[\[\]<]")  # escapes are kept, each other bracket escaped
# A colon another colon follows needs nothing: no name starts with one, and the last gets the break.
_PROSE_COLON = re.compile(r":(?![:\n\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]|\Z)")


def _defang(text: str) -> str:
    text = _SCHEME.sub(lambda m: (m.group(1) or m.group(2)) + _ZWSP + ":", text)
    return _WWW.sub(lambda m: m.group(0)[:3] + _ZWSP + ".", text).replace("@", "@" + _ZWSP)


def _could_start_a_name(char: str) -> bool:
    """Whether a directive name (or an emoji or icon name, or a character reference that becomes
    one) could start with `char`, as the directive parser reads characters: UTF-16 units, where
    a tab is not whitespace and half an emoji is not a symbol."""
    if char in "+-&_" or char == "\t" or ord(char) > 0xFFFF:  # "_": the emoji plugin loads on ":_a:"
        return True
    return char not in _JS_SPACES and unicodedata.category(char)[0] not in "PS"


def _break_names(text: str) -> str:
    return _COLON.sub(lambda m: ":" + _NO_NAME if _could_start_a_name(m.group(1)) else ":", text)


def _break_named_colons(text: str) -> str:
    """No directive, icon, logo or emoji shortcode: an invisible break between each colon and
    the name after it. Everywhere, code included: there it is invisible too."""
    return _break_names(_COLON_REFERENCE.sub(":", text))


def _in_prose(text: str, change) -> str:
    """`change` applied to the prose only, as Streamlit's math check splits it: code and the
    escapes it masks stay as they are (a backslash there would show)."""
    parts, end = [], 0
    for m in _CODE_OR_ESCAPE.finditer(text):
        parts += [change(text[end:m.start()]), m.group(0)]
        end = m.end()
    return "".join(parts) + change(text[end:])


def _math_as_text(prose: str) -> str:
    """Every dollar escaped; what would have been math is escaped as text too, so "\\," and
    "*" in it show as typed instead of turning into markdown."""
    def one(m: re.Match) -> str:
        return r"\$" if m.group(0) == "$" else _ANYWHERE.sub(r"\\\g<0>", m.group(0)).replace("$", r"\$")

    return _MATH_OR_DOLLAR.sub(one, prose)


def math_would_load(text: str) -> bool:
    """Whether Streamlit's frontend would render math in `text` (its own test, transcribed)."""
    if "$" not in text:
        return False
    masked = _CODE_OR_ESCAPE.sub("_", text)
    return bool(_DISPLAY_MATH.search(masked) or _INLINE_MATH.search(masked))


def _sure_fences(text: str) -> list[tuple[int, int]]:
    """Spans of `text` in fenced code blocks that markdown reads as code whatever the containers
    (lists, quotes) around them. A fence after a container marker, one where a table may be open,
    or one whose lines might outlive their list item makes the rest of the text count as prose:
    from there on this reading and markdown's could disagree about which fence closes where."""
    spans, start, fence, pipe_in_block = [], 0, None, False
    for line in text.split("\n"):
        end = min(start + len(line) + 1, len(text))
        if fence is not None:
            opened, char, length, indent = fence
            run = f"{re.escape(char)}{{{length},}}[ \\t]*"
            lead = line[:len(line) - len(line.lstrip(" \t"))]
            if re.fullmatch(f" {{0,3}}{run}", line):  # closes it, in a list item or not
                spans.append((opened, end))
                fence = None
            elif indent and line.strip(" \t") and (
                    "\t" in lead or len(lead) < indent or (re.fullmatch(f" *{run}", line) and len(lead) <= indent + 3)):
                spans.append((opened, start))  # its list item may have ended here, or it may close here
                return spans
        elif not line.strip(" \t"):
            pipe_in_block = False
        elif _FENCE_LIKE.match(line):
            clean = _CLEAN_FENCE.fullmatch(line)
            if clean is None or pipe_in_block:  # in a container, or maybe a table's row
                return spans
            if clean.group(2)[0] == "`" and "`" in clean.group(3):
                pipe_in_block = pipe_in_block or "|" in line  # no fence: a paragraph's line
            else:
                fence = (start, clean.group(2)[0], len(clean.group(2)), len(clean.group(1)))
        elif "|" in line:
            pipe_in_block = True
        start = end
    if fence is not None:
        spans.append((fence[0], len(text)))
    return spans


def _sure_code_spans(text: str, start: int, stop: int) -> list[tuple[int, int]]:
    """Code spans in text[start:stop] (prose between blank lines), paired as CommonMark pairs
    backtick runs. Markdown pairs within one paragraph, cell or heading, which this does not see:
    so they count only if every pair is on one line and holds no pipe (a table's cell ends
    there); then markdown cannot pair any of them differently."""
    spans, here = [], start
    while here < stop:
        if text[here] == "\\":
            here += 2
        elif text[here] == "`":
            opened = here
            while here < stop and text[here] == "`":
                here += 1
            closer = re.compile(f"(?<!`){'`' * (here - opened)}(?!`)").search(text, here, stop)
            if closer is None:
                continue  # no partner: the run is text, what follows it is read afresh
            if "\n" in text[opened:closer.end()] or "|" in text[opened:closer.end()]:
                return []
            spans.append((opened, closer.end()))
            here = closer.end()
        else:
            here += 1
    return spans


def _sure_code(text: str) -> list[tuple[int, int]]:
    """Spans of `text` markdown reads as code for sure: fenced blocks, and code spans."""
    spans, end = [], 0
    for fence_start, fence_end in [*_sure_fences(text), (len(text), len(text))]:
        blanks = [m.start() for m in _BLANK_LINE.finditer(text, end, fence_start)]
        for chunk_start, chunk_stop in zip([end, *blanks], [*blanks, fence_start], strict=True):
            spans += _sure_code_spans(text, chunk_start, chunk_stop)
        spans.append((fence_start, fence_end))
        end = fence_end
    return [span for span in spans if span[0] < span[1]]


def _in_sure_prose(text: str, prose_change, code_change=lambda code: code) -> str:
    parts, end = [], 0
    for start, stop in _sure_code(text):
        parts += [prose_change(text[end:start]), code_change(text[start:stop])]
        end = stop
    return "".join(parts) + prose_change(text[end:])


def _no_link_or_name(prose: str) -> str:
    """No bracket or angle bracket markdown could read as syntax, no colon a name could follow."""
    prose = _PROSE_COLON.sub(":" + _NO_NAME, prose)
    return _LIVE_IN_PROSE.sub(lambda m: m.group(0) if len(m.group(0)) == 2 else "\\" + m.group(0), prose)


def inert_markdown(text: str) -> str:
    def inline(m: re.Match) -> str:
        bang, words, angled, bare = m.groups()
        url, kind = angled or bare, "image" if bang else "link"
        return f"{words} [{kind}: {_defang(url)}]" if url else words

    text = re.sub(r"\r\n?", "\n", text)  # markdown's line endings, so that lines here are its lines
    text = _COLON_REFERENCE.sub(":", text)
    text = _in_prose(text, lambda prose: _LATEX_BRACKET.sub(r"\\\\", prose))  # \( shows as \(
    text = _BARE_NUMBER.sub(lambda m: f"{m.group(1)}{m.group(2)}\\{m.group(3)}", text)
    text = _in_sure_prose(text, lambda prose: _INLINE.sub(inline, prose))  # code shows as written
    # Any scheme, www. or address left (bare autolinks, <http://...>) stops being a link.
    text = _defang(text)
    # Math loads for the whole text or not at all, so dollars are escaped only when it would:
    # a price ("$5 and $6") stays as it was written.
    if math_would_load(text):
        text = _in_sure_prose(text, lambda prose: _in_prose(prose, _math_as_text))
    # Last, so that nothing above brings a bracket or a colon back.
    text = _in_sure_prose(text, _no_link_or_name, _break_names)
    # A dollar left where Streamlit's own reading sees prose (markdown's may see code there) would
    # still load math, to no effect but for certainty: escape it.
    return _in_prose(text, lambda prose: prose.replace("$", r"\$")) if math_would_load(text) else text


def inert_text(value: object) -> str:
    """`value` as markdown that shows every character as typed, no formatting at all: for a
    value (a file's field, a job's summary, a name) inside a caption or a message. Only what
    markdown would read as syntax is escaped, so a sentence stays readable in the source too.
    Lines stay lines; leading spaces go (they would make a code block)."""
    def line(text: str) -> str:
        text = _ANYWHERE.sub(r"\\\g<0>", _defang(text.strip()))
        return _LINE_START.sub(lambda m: m.group(0) + "\\" if m.group(0)[0].isdigit() else "\\" + m.group(0), text)

    # Character references are escaped above, so a colon one shows as typed; real colons still break.
    text = _PROSE_COLON.sub(":" + _NO_NAME, "  \n".join(map(line, str(value).splitlines())))  # "  \n": a line break
    return _in_prose(text, lambda prose: prose.replace("$", r"\$")) if math_would_load(text) else text
