"""textdecode: the bytes of a file or an argument become text by fixed rules, or a UsageError."""

from __future__ import annotations

import codecs
import os
import sys
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mathsolve.errors import UsageError
from mathsolve.files.decode import decode, decode_argument, split_lines

TEXT = '{"question": "Combien font 2+2 ? Ça fait 4.", "note": "数学"}\n'


@pytest.mark.parametrize(
    "data, encoding, bom",
    [
        (TEXT.encode("utf-8"), "utf-8", False),
        (codecs.BOM_UTF8 + TEXT.encode("utf-8"), "utf-8", True),
        (codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"), "utf-16-le", True),
        (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "utf-16-be", True),
        (TEXT.encode("utf-16-le"), "utf-16-le", False),
        (TEXT.encode("utf-16-be"), "utf-16-be", False),
        (codecs.BOM_UTF32_LE + TEXT.encode("utf-32-le"), "utf-32-le", True),
        (codecs.BOM_UTF32_BE + TEXT.encode("utf-32-be"), "utf-32-be", True),
    ],
    ids=["utf8", "utf8-bom", "utf16le-bom", "utf16be-bom", "utf16le", "utf16be", "utf32le-bom", "utf32be-bom"],
)
def test_each_encoding_reads_back_the_same_text(data: bytes, encoding: str, bom: bool) -> None:
    decoded = decode(data, name="in.jsonl")
    assert (decoded.text, decoded.encoding, decoded.bom, decoded.warnings) == (TEXT, encoding, bom, ())


def test_the_utf8_bom_no_longer_hides_the_first_record() -> None:
    lines = split_lines(decode(codecs.BOM_UTF8 + b'{"a": 1}\n{"a": 2}\n', name="x").text)
    assert lines == ['{"a": 1}', '{"a": 2}']


@pytest.mark.parametrize(
    "data, text, warning",
    [
        ("café\n".encode("latin-1"), "caf\ufffd\n",
         "hw.txt: 1 byte is not UTF-8 (first at byte 3); replaced with U+FFFD"),
        (b"12345678901\xe9\xe8\xff", "12345678901\ufffd\ufffd\ufffd",
         "hw.txt: 3 bytes are not UTF-8 (first at byte 11); replaced with U+FFFD"),
        (b"ab\xe2\x82", "ab\ufffd",  # a cut-off sequence: one replacement, both bytes counted
         "hw.txt: 2 bytes are not UTF-8 (first at byte 2); replaced with U+FFFD"),
        (b"\xed\xa0\x80x", "\ufffd\ufffd\ufffdx",  # an encoded surrogate is not UTF-8
         "hw.txt: 3 bytes are not UTF-8 (first at byte 0); replaced with U+FFFD"),
        (codecs.BOM_UTF8 + b"x\xff", "x\ufffd",  # offsets count the BOM: they are the file's
         "hw.txt: 1 byte is not UTF-8 (first at byte 4); replaced with U+FFFD"),
        (codecs.BOM_UTF16_LE + "ab".encode("utf-16-le") + b"\x00\xd8" + "c".encode("utf-16-le"), "ab\ufffdc",
         "hw.txt: 2 bytes are not UTF-16 (first at byte 6); replaced with U+FFFD"),
        ("\ufffd already".encode("utf-8") + b"\x80", "\ufffd already\ufffd",  # a real U+FFFD is not counted
         "hw.txt: 1 byte is not UTF-8 (first at byte 11); replaced with U+FFFD"),
    ],
    ids=["latin1", "three", "truncated", "surrogate", "after-bom", "utf16-lone-surrogate", "real-fffd"],
)
def test_invalid_bytes_are_replaced_and_reported(data: bytes, text: str, warning: str) -> None:
    decoded = decode(data, name="hw.txt")
    assert decoded.text == text
    assert decoded.warnings == (warning,)


@pytest.mark.parametrize(
    "data, where",
    [
        (b"\x7fELF\x02\x01\x01\x00\x00\x00\x00", "NUL bytes at byte 7, 4 in all"),
        (b"text\x00more", "a NUL byte at byte 4"),
        (bytes(range(256)) * 4, "NUL bytes at byte 0, 4 in all"),
        (codecs.BOM_UTF16_LE + "a\x00b".encode("utf-16-le"), "a NUL byte at byte 4"),
        (b"\x00" * 64, "NUL bytes at byte 0, 64 in all"),  # NULs at both parities: not UTF-16
    ],
    ids=["elf", "one-nul", "all-bytes", "utf16-with-nul", "zeros"],
)
def test_binary_data_is_a_usage_error_naming_the_file(data: bytes, where: str) -> None:
    with pytest.raises(UsageError) as caught:
        decode(data, name="model.bin")
    assert str(caught.value) == f"model.bin looks like a binary file, not text ({where})"


def test_empty_data_is_empty_text() -> None:
    assert decode(b"", name="x").text == ""


def test_split_lines_splits_only_where_open_would() -> None:
    text = 'a\r\nb\rc\n{"s": "x\u2028y\u0085z\x0c"}\n\nlast'
    assert split_lines(text) == ["a", "b", "c", '{"s": "x\u2028y\u0085z\x0c"}', "", "last"]
    assert split_lines("") == [] and split_lines("one\n") == ["one"]


def test_a_ten_megabyte_file_decodes_well_under_a_second() -> None:
    line = '{"question": "Le café coûte 3 € ; combien pour 7 ?", "answer": "21"}\n'
    for data in (line.encode("utf-8"), line.encode("latin-1", "replace"), line.encode("utf-16")):
        data = data * (10_000_000 // len(data))
        started = time.perf_counter()
        decode(data, name="big.jsonl")
        assert time.perf_counter() - started < 1.0  # about 0.01-0.05 s here


# ---------------------------------------------------------------------------
# Command-line arguments
# ---------------------------------------------------------------------------


def test_a_clean_argument_is_returned_as_is() -> None:
    assert decode_argument("What is 2+2? ½ 数学") == ("What is 2+2? ½ 数学", None)


@pytest.mark.skipif(sys.getfilesystemencoding().lower() not in ("utf-8", "utf8"), reason="needs a UTF-8 locale")
def test_undecodable_argument_bytes_become_replacement_characters() -> None:
    arg = os.fsdecode(b"caf\xe9 2+2")  # what Python puts in sys.argv for Latin-1 bytes
    text, warning = decode_argument(arg)
    assert text == "caf\ufffd 2+2"
    assert warning == "argument 'caf\ufffd 2+2': 1 byte is not UTF-8 (first at byte 3); replaced with U+FFFD"
    text.encode("utf-8")  # printable and writable now


def test_a_lone_surrogate_that_fsencode_refuses_is_replaced_too() -> None:
    text, warning = decode_argument("x\ud800y")
    assert text == "x\ufffd\ufffd\ufffdy" and warning is not None and "3 bytes" in warning


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_give_text_or_a_usage_error(data: bytes) -> None:
    try:
        decoded = decode(data, name="f")
    except UsageError as exc:
        assert str(exc).startswith("f looks like a binary file")
        return
    assert "\x00" not in decoded.text
    decoded.text.encode("utf-8")  # never a lone surrogate: the text can always be written
    assert len(decoded.warnings) <= 1


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
       st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32"]))
def test_any_text_with_a_bom_or_in_utf8_reads_back_unchanged(text: str, encoding: str) -> None:
    assume(not (encoding == "utf-8" and text.startswith("\ufeff")))  # that is a BOM, by rule 1
    decoded = decode(text.encode(encoding), name="f")
    assert decoded.text == text and decoded.warnings == ()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x7E, min_codepoint=0x20), min_size=1),
       st.sampled_from(["utf-16-le", "utf-16-be"]))
def test_ascii_text_in_utf16_without_bom_is_recognised(text: str, encoding: str) -> None:
    decoded = decode(text.encode(encoding), name="f")
    assert (decoded.text, decoded.encoding) == (text, encoding)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=())))  # lone surrogates included
def test_any_argument_becomes_encodable_text(arg: str) -> None:
    text, warning = decode_argument(arg)
    text.encode("utf-8")
    if all(not 0xD800 <= ord(c) <= 0xDFFF for c in arg):
        assert (text, warning) == (arg, None)
    elif "\ufffd" in text and "\ufffd" not in arg:
        assert warning is not None and "replaced with U+FFFD" in warning
