from zerosearch_lite.simulator.parsing import parse_documents, split_title


def test_doc_markers_cut_at_k_plus_one():
    text = "\n".join(f"Doc {i}: document number {i} has some words" for i in range(1, 8))
    parsed = parse_documents(text, 5)
    assert len(parsed.docs) == 5 and parsed.format == "markers" and not parsed.warnings
    assert parsed.docs[0] == ("", "document number 1 has some words")


def test_titles_in_parentheses_and_quotes():
    assert split_title("(Mary Shelley) An English novelist who wrote Frankenstein.") == (
        "Mary Shelley", "An English novelist who wrote Frankenstein.")
    assert split_title('"Frankenstein"\nA novel published in 1818.') == ("Frankenstein", "A novel published in 1818.")


def test_a_prefix_is_a_title_only_when_a_document_follows_it():
    assert split_title("(Frankenstein) https://en.wikipedia.org/wiki/Frankenstein") == (
        "", "(Frankenstein) https://en.wikipedia.org/wiki/Frankenstein")
    assert split_title("Novel: Frankenstein 1818") == ("", "Novel: Frankenstein 1818")
    assert split_title("Novel: Frankenstein by Shelley") == ("Novel", "Frankenstein by Shelley")
    assert parse_documents("Doc 1: (Frankenstein) Mary Shelley", 1).docs == [("", "(Frankenstein) Mary Shelley")]


def test_no_markers_falls_back_to_numbered_lines():
    parsed = parse_documents("1. first doc has words\n2. second doc has words\n3) third doc has words", 5)
    assert [d[1] for d in parsed.docs] == ["first doc has words", "second doc has words", "third doc has words"]
    assert any("parsed as numbered" in w for w in parsed.warnings)
    assert any("3 of 5" in w for w in parsed.warnings)


def test_json_array():
    parsed = parse_documents('Here: [{"title": "A", "text": "alpha beta gamma"}, "delta epsilon zeta"]', 3)
    assert parsed.docs == [("A", "alpha beta gamma"), ("", "delta epsilon zeta")]


def test_plain_paragraphs_and_garbage_never_raise():
    parsed = parse_documents("one paragraph with words\n\nanother paragraph with words", 5)
    assert len(parsed.docs) == 2
    for garbage in ("", "   ", "Doc", "[not json", "Doc 1:", "\x00\x01", "{}"):
        result = parse_documents(garbage, 5)
        assert len(result.docs) <= 1 and result.warnings


def test_duplicates_and_short_fragments_dropped():
    parsed = parse_documents("Doc 1: same text is here\nDoc 2: same text is here\nDoc 3: too short", 3)
    assert parsed.docs == [("", "same text is here")]
    assert "1 of 3" in parsed.warnings[-1]
