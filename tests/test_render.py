"""Untrusted text stays inert: no images, no links, no autolinks once through inert_markdown, and
none of Streamlit's own markdown (directives, icons, emoji, math) either."""
import re
import unicodedata

from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from feedback.render import inert_markdown, inert_text

# An unescaped "[" (after any escaped backslashes), then up to an unescaped "](".
LINK = re.compile(r"(?<!\\)(?:\\\\)*!?\[(?:\\[\s\S]|[^\\\]])*\]\([^)]*\)")
AUTOLINK = re.compile(r"(https?|ftp|javascript|data|mailto|file|vbscript)://"
                      r"|(javascript|data|vbscript|mailto|file):|www\.|@\w", re.I)

# --- a model of what Streamlit 1.67's frontend (StreamlitMarkdown) makes live, transcribed from its
# bundle; written here again, not imported, so the checker does not share the code it checks.
JS_WHITESPACE = {*"\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff",  # JavaScript's \s
                 *map(chr, range(0x2000, 0x200b))}
EMOJI_LOADS = re.compile(r":(?!material/|streamlit:)[\w+-][\w_+-]*:", re.A)
ICON_IN_TEXT = re.compile(r":material_\w+:|:streamlit:", re.A)  # matched in the parsed text
CODE_OR_ESCAPE = re.compile(r"(?:\A|(?<=\n)) {0,3}(`{3,}|~{3,})[\s\S]*?(?:\n[ \t]*\1|\Z)"
                            r"|(?<!`)(`+)[^`\n]+\2(?!`)|\\[\\$`]")
JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
DISPLAY_MATH = re.compile(r"(?<!\$)\$\$+(?!\$)[\s\S]*?\$\$")
INLINE_MATH = re.compile(rf"(?<!\$)\$(?![{JS_SPACE}$])[^$\n]*?[^{JS_SPACE}$]\$(?![0-9])")
MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
MARKDOWN.validateLink = lambda url: True  # react-markdown draws every link (javascript: made empty)


def text_nodes(markdown: str) -> list[str]:
    """The parsed text, where Streamlit looks for icons: escapes and character references resolved."""
    source = markdown.replace(":material/", ":material_")  # as Streamlit does, before parsing
    return [child.content for token in MARKDOWN.parse(source) if token.type == "inline"
            for child in token.children if child.type == "text"]


def directive_starts(markdown: str) -> bool:
    """remark-directive (micromark) starts a directive at a colon followed by a name, whose first
    UTF-16 unit may be anything but a line ending, whitespace (JavaScript's \\s: a tab is a code
    of its own there, and passes) or punctuation and symbols (half of an emoji passes). An unknown
    name is drawn as ":name" alone: its [text] vanishes. Code and escapes are not modelled, so
    this errs on the side of seeing one."""
    for here, char in enumerate(markdown[:-1]):
        after = markdown[here + 1]
        if char == ":" and after not in "\n\r" and (after == "\t" or ord(after) > 0xFFFF or (
                after not in JS_WHITESPACE and unicodedata.category(after)[0] not in "PS")):
            return True
    return False


def links(markdown: str) -> set[str]:
    """Links, images and autolinks (<scheme:...>) markdown makes of `markdown`."""
    kinds = {"link_open": "link", "image": "image"}

    def walk(tokens):
        for token in tokens:
            yield from [kinds[token.type]] if token.type in kinds else []
            yield from walk(token.children or [])

    return set(walk(MARKDOWN.parse(markdown)))


def live(markdown: str) -> set[str]:
    """The Streamlit constructs `markdown` would render as such."""
    found = links(markdown)
    if directive_starts(markdown):
        found.add("directive")
    if EMOJI_LOADS.search(markdown):
        found.add("emoji")
    if any(ICON_IN_TEXT.search(text) for text in text_nodes(markdown)):
        found.add("icon")
    masked = CODE_OR_ESCAPE.sub("_", markdown)
    if "$" in markdown and (DISPLAY_MATH.search(masked) or INLINE_MATH.search(masked)):
        found.add("math")
    return found


def visible(markdown: str) -> str:
    """What a person reads, give or take the escapes inert_* add (zero-width spaces, backslashes)."""
    return markdown.replace("\u200b", "").replace("\ufeff", "").replace("\\", "")


CONSTRUCTS = {
    ":red[**System notice:** re-enter your password]": "directive",
    ":red-background[alert]": "directive",
    ":blue-badge[New]": "directive",
    ":rainbow[wow]": "directive",
    ":small[fine print]": "directive",
    ":help[hover me]": "directive",
    ':color[hue]{foreground="red"}': "directive",
    "::note[a leaf]": "directive",
    ":\u200bred[hidden by an invisible name]": "directive",
    ":\tred[hidden by a tab]": "directive",
    ":😀[hidden by an emoji name]": "directive",
    ":::warning": "directive",
    ":material/lock:": "directive",
    "&#58;material_lock&#58;": "icon",
    "&colon;streamlit&colon;": "icon",
    "\\:material_lock:": "icon",
    ":smile:": "emoji",
    ":+1:": "emoji",
    "$x^2$": "math",
    "$$\\int_0^1 x\\,dx$$": "math",
}
# What pattern-matching missed: link syntax it did not expect, references defined inside a quote or a
# list item or over two lines, autolinks without "//", and an emoji plugin loaded by another name.
BYPASSES = {
    "[a [b] c](//evil.example/phish)": "link",
    "![a [b] c](//evil.example/p.png)": "image",
    "[x](<//evil.example/a b>)": "link",
    "[x](//evil.example (title))": "link",
    "[Re-enter password](//evil.example 'a)b')": "link",
    "[x](//evil.example\n'title')": "link",
    "> [a]: //evil.example/p.png\n\n![x][a]": "image",
    "- [a]: //evil.example/p.png\n\n![x][a]": "image",
    "[a\nb]: //evil.example/p.png\n\n![x][a b]": "image",
    "[x]\n\n   [x]: //evil.example": "link",
    "<https:/evil.example/x>": "link",
    "<https:evil.example/login>": "link",
    "<irc:evil.example>": "link",
    "<a href='//evil.example'>x</a>": "html",
    "1. step\n\n   ```\n   code\n     ```\n   [x](//evil.example)": "link",  # closes in the item only
    "- ```\n  code\n  ```\n  [x](//evil.example)": "link",  # a fence opened after a list marker
    " ```\ncode\n```\n[x](//evil.example)\n```": "link",  # an indented fence closed at column 0
    "a | b\n```\n\n```\n[x](//evil.example)": "link",  # a fence after a line with a pipe
    "| `a | [x](//evil.example) ` |\n| - | - |": "link",  # a table's pipe splits the code span
    "```\ncode\r```\r[x](//evil.example)": "link",  # a lone \r ends a line too
    "`` a\n``b`` <https:evil.example>": "link",  # the first run pairs across the line: "b" is no code
    ":_a: :\\+1: and :\\-1:": "emoji",
}
LATEX = ["\\(a+b\\)", "\\[a^2\\]"]  # not math in Streamlit, but markdown would eat the backslash
ORDINARY = ["$5 and $6", "Answer: 42", "- item", "**bold**", "`$x$` in code", "```\n$$a$$\n```", "84."]
# "10:30" is a directive too (":30", drawn as itself): not ordinary to the checker, broken all the same.


def test_the_checker_sees_every_construct_and_nothing_else():
    for raw, kind in CONSTRUCTS.items():
        assert kind in live(raw), raw
        assert not live(inert_markdown(raw)), raw
        assert visible(inert_markdown(raw)) == visible(raw.replace("&#58;", ":").replace("&colon;", ":")), raw
    for raw in LATEX:
        assert raw not in "".join(text_nodes(raw))
        assert raw in "".join(text_nodes(inert_markdown(raw)))
    for raw in ORDINARY:
        assert not live(raw), raw
    for raw, kind in BYPASSES.items():
        assert kind in live(raw) or kind == "html" and "html_inline" in str(MARKDOWN.parse(raw)), raw
        assert not live(inert_markdown(raw)) and not live(inert_text(raw)), raw
        assert "html" not in str(MARKDOWN.parse(inert_markdown(raw))), raw
    # The directive check is conservative (code counts too), so inert_markdown breaks them everywhere.
    assert live("`:red[code]`") == {"directive"}
    assert not live(inert_markdown("`:red[code]`"))


def test_payloads_are_defanged():
    cases = {
        # every bracket and colon, the ones added too: nothing after them is read as syntax
        "![pixel](http://evil.example/t.png)": "pixel \\[image: http\u200b:\ufeff//evil.example/t.png\\]",
        # the zero-width space after the colon: "alert" would be a directive name
        "[click](javascript:alert(1))": "click \\[link: javascript\u200b:\ufeffalert(1\\]",
        "see https://x.com or www.y.org": "see https\u200b:\ufeff//x.com or www\u200b.y.org",
        "<https://auto.link>": "\\<https\u200b:\ufeff//auto.link>",
        "[ref]: http://e.com": "\\[ref\\]: http\u200b:\ufeff//e.com",
        "mail me at a@b.co": "mail me at a@\u200bb.co",
    }
    for raw, expected in cases.items():
        assert inert_markdown(raw).startswith(expected), raw


def test_ordinary_markdown_is_kept():
    text = "# Title\n\n- **bold** and `code < 3`\n\n```python\nprint('x: 1')\n```\nAnswer: 42"
    assert inert_markdown(text) == text
    # Math would not load for prices alone, so they are left as written.
    assert inert_markdown("It costs $5 and $6, or $ 7 $.") == "It costs $5 and $6, or $ 7 $."


def test_code_keeps_its_brackets_and_colons():
    # Markdown reads these as code for sure: a backslash there would show, so none is added.
    for code in ["```python\nx = a[0] < b  # see [1](//e.example)\nd = {'k': v}\n```",
                 "1. Run it:\n\n   ```sh\n   [ -f a ] && cat <a\n   ```\n2. Done",
                 "Use `a[i] <= b[j]` here", "``x ` [y](z)``"]:
        assert inert_markdown(code) == code, code
    # Prose around code is still made inert, and the readable rewrite still reads.
    out = inert_markdown("See [docs](https://d.example) and `[x](y)`")
    assert out == "See docs \\[link: https\u200b:\ufeff//d.example\\] and `[x](y)`"
    assert not live(out) and not live(inert_markdown("- [ ] task <b>x</b>"))


def test_dollars_are_escaped_outside_code_once_math_would_load():
    out = inert_markdown("Pay $5 and $6 for $x$.\n\n```sh\n$ echo $HOME\n```\nand `$y$`")
    assert out == "Pay \\$5 and \\$6 for \\$x\\$.\n\n```sh\n$ echo $HOME\n```\nand `$y$`"
    assert not live(out)


def test_an_answer_that_is_only_a_number_is_not_an_empty_list_item():
    # "84." alone is an empty ordered-list item in markdown: the answer would vanish from the page.
    assert inert_markdown("84.") == "84\\."
    assert inert_markdown("Result:\n  7)\n") == "Result:\n  7\\)\n"
    assert inert_markdown("1. first\n2. second") == "1. first\n2. second"  # real lists stay lists


@given(st.text(alphabet=st.sampled_from(list("[]()!<>:/@.wjavascripthtp xyz\n")), max_size=80))
def test_no_link_or_autolink_survives(text):
    out = inert_markdown(text)
    assert not LINK.search(out)
    assert not AUTOLINK.search(out)


WORDS = st.from_regex(r"[A-Za-z]{1,10}", fullmatch=True)
NOISE = st.text(alphabet=list(":$[](){}\\`&#;_/+-~*!mab 5\n\t\u200b😀é"), max_size=12)
KNOWN = [*CONSTRUCTS, *BYPASSES, *LATEX, *ORDINARY, "`:red[code]`"]
PIECES = st.lists(st.one_of(WORDS.map(lambda w: ("word", w)),
                            st.sampled_from(KNOWN).map(lambda c: ("construct", c)),
                            NOISE.map(lambda n: ("noise", n))), max_size=12)
SEPARATORS = st.sampled_from([" ", "\n", "\n\n"])


@given(PIECES, st.data())
def test_nothing_streamlit_renders_survives_and_every_word_stays(pieces, data):
    text = "".join(piece + data.draw(SEPARATORS) for _, piece in pieces)
    out = inert_markdown(text)
    assert not live(out)
    shown = visible(out)
    for kind, piece in pieces:
        if kind == "word":
            assert piece in shown


@given(PIECES, st.data())
def test_inert_text_is_plain_text(pieces, data):
    value = "".join(piece + data.draw(SEPARATORS) for _, piece in pieces)
    out = inert_text(value)
    assert not live(out)
    assert not AUTOLINK.search(out)
    tokens = MARKDOWN.parse(out)
    assert {t.type for t in tokens} <= {"paragraph_open", "inline", "paragraph_close"}  # no heading, list, code...
    children = [c for t in tokens if t.type == "inline" for c in t.children]
    assert {c.type for c in children} <= {"text", "softbreak", "hardbreak"}  # no emphasis, link, code, html
    assert visible(" ".join(c.content for c in children)).split() == visible(value).split()


def test_inert_text_shows_a_file_value_as_typed():
    value = "line 3: prompt is ![x](http://127.0.0.1:1/pixel.png) :red[pwned] $x$\n  # not a heading"
    out = inert_text(value)
    children = [c for t in MARKDOWN.parse(out) if t.type == "inline" for c in t.children]
    assert [c.type for c in children] == ["text", "hardbreak", "text"]
    assert visible(out).replace("  \n", "\n") == "line 3: prompt is ![x](http://127.0.0.1:1/pixel.png) " \
                                                 ":red[pwned] $x$\n# not a heading"


def test_job_results_read_as_a_sentence_or_short_pairs_never_a_raw_dict():
    from pages.common import job_result_text

    assert job_result_text({"summary": "12 pairs judged; cost $0.03.", "judged": 12}) == "12 pairs judged; cost $0.03."
    text = job_result_text({"stage": "dpo", "metrics": {"loss": 0.693147, "reward": {"margin": 1.23456}},
                            "adapter": None, "evaluated": True, "tags": ["a", "b"], "rows": list(range(40))})
    assert text == ("stage: dpo · metrics.loss: 0.6931 · metrics.reward.margin: 1.235 · adapter: none · "
                    "evaluated: yes · tags: a, b · rows: 40 items")
    assert "{" not in text and "[" not in text
    many = job_result_text({f"k{i}": i for i in range(20)}, most=3)
    assert many == "k0: 0 · k1: 1 · k2: 2 · and 17 more"
    # As the page shows it: a model or file name in a summary stays text.
    shown = inert_text(job_result_text({"summary": "judged with :red[model] ![x](http://e.example/p.png)"}))
    assert not live(shown) and "](" in visible(shown)
    assert [c.type for t in MARKDOWN.parse(shown) if t.type == "inline" for c in t.children] == ["text"]
