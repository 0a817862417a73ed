"""Untrusted text stays inert: no images, no links, no autolinks once through inert_markdown."""
import re

from hypothesis import given
from hypothesis import strategies as st

from feedback.render import inert_markdown

LINK = re.compile(r"!?\[[^\]]*\]\([^)]*\)")
AUTOLINK = re.compile(r"(https?|ftp|javascript|data|mailto|file|vbscript)://"
                      r"|(javascript|data|vbscript|mailto|file):|www\.|@\w", re.I)


def test_payloads_are_defanged():
    cases = {
        "![pixel](http://evil.example/t.png)": "pixel [image: http\u200b://evil.example/t.png]",
        "[click](javascript:alert(1))": "click [link: javascript\u200b:alert(1]",
        "see https://x.com or www.y.org": "see https\u200b://x.com or www\u200b.y.org",
        "<https://auto.link>": "<https\u200b://auto.link>",
        "[ref]: http://e.com": "\\[ref\\]: http\u200b://e.com",
        "mail me at a@b.co": "mail me at a@\u200bb.co",
    }
    for raw, expected in cases.items():
        assert inert_markdown(raw).startswith(expected), raw


def test_ordinary_markdown_is_kept():
    text = "# Title\n\n- **bold** and `code < 3`\n\n```python\nprint('x: 1')\n```\nAnswer: 42"
    assert inert_markdown(text) == text


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
