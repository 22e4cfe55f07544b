from llmfti.text.cleaning import clean_text


def test_unicode_is_normalised_and_controls_removed() -> None:
    assert clean_text("ﬁne\u00a0café\u200b\x07 text") == "fine café text"


def test_whitespace_is_tidied_but_paragraphs_kept() -> None:
    assert clean_text("a   b\r\n\r\n\r\n\r\nc\t d  ") == "a b\n\nc d"


def test_boilerplate_lines_are_dropped() -> None:
    pages = "".join(f"Acme Corp confidential\nReal content of page {n}.\nPage {n} of 9\n" for n in (1, 2, 3))
    text = clean_text(pages + "Skip to main content\n© 2024 Acme\n42\n")
    assert text == "Real content of page 1.\nReal content of page 2.\nReal content of page 3."
    assert "confidential" not in text and "Page 3" not in text and "Skip to" not in text and "2024" not in text


def test_markdown_structure_is_kept() -> None:
    text = "# Title\n\n```\ncode\n```\n\n```\nmore\n```\n\n```\nx\n```\n- item"
    assert clean_text(text).count("```") == 6 and "- item" in clean_text(text)
