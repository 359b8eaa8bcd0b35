"""Recorded paths stay inside the store; formats are told by name and by WAV header."""
import struct

import pytest

from webpush.recpaths import WAV_PCM, OutsideStore, format_of, relative_name, wav_format_tag

MONITOR = "/var/spool/asterisk/monitor"


@pytest.mark.parametrize("recorded, name", [
    ("/var/spool/asterisk/monitor/in-4930123400-1.wav", "in-4930123400-1.wav"),
    ("/var/spool/asterisk/monitor/2026/12/06/out-1.wav", "2026/12/06/out-1.wav"),
    ("/var/spool/asterisk/monitor//x.wav", "x.wav"),
    ("in-1.wav", "in-1.wav"),
    ("./queue/in-1.WAV", "queue/in-1.WAV"),
])
def test_names_inside_the_store(recorded, name):
    assert relative_name(recorded, MONITOR) == name


@pytest.mark.parametrize("recorded", [
    "../etc/passwd", "/var/spool/asterisk/monitor/../../../etc/passwd", "a/../../b.wav", "a/..",
    "/etc/passwd", "/var/spool/asterisk/monitor-evil/x.wav", "/var/spool/asterisk/monitor",
    "/var/spool/asterisk/monitor/", "", ".", "x\x00.wav", "x\n.wav", "..\\..\\boot.ini",
    "a" * 600,
])
def test_paths_leaving_the_store_are_refused(recorded):
    with pytest.raises(OutsideStore):
        relative_name(recorded, MONITOR)


def test_an_absolute_path_needs_a_monitor_folder():
    with pytest.raises(OutsideStore):
        relative_name("/x.wav", "")
    with pytest.raises(OutsideStore):
        relative_name("/x.wav", "/")


@pytest.mark.parametrize("name, kind", [("a.wav", "wav"), ("a.WAV", "wav49"), ("a.gsm", "gsm"),
                                        ("a.ulaw", "ulaw"), ("a.alaw", "alaw"), ("a.sln", "sln"),
                                        ("d/a.wav16", "wav"), ("a.mp3", "mp3")])
def test_formats_by_extension(name, kind):
    assert format_of(name).name == kind


@pytest.mark.parametrize("name", ["a.txt", "wav", ".wav", "a.wav.php", "a"])
def test_unknown_formats(name):
    assert format_of(name) is None


def _wav(tag, extra_chunk=b""):
    fmt = struct.pack("<HHIIHH", tag, 1, 8000, 16000, 2, 16)
    return b"RIFF" + struct.pack("<I", 36) + b"WAVE" + extra_chunk + b"fmt " + struct.pack("<I", 16) + fmt


def test_wav_format_tags():
    assert wav_format_tag(_wav(1)) == 1
    assert wav_format_tag(_wav(0x31)) == 0x31
    assert wav_format_tag(_wav(1, b"LIST" + struct.pack("<I", 3) + b"abc\x00")) == 1     # odd chunk padded
    assert wav_format_tag(b"RIFF\x00\x00\x00\x00WAVEdata") is None
    assert wav_format_tag(b"OggS" + b"\x00" * 40) is None
    assert WAV_PCM.sox_input is None
