#!/usr/bin/python3
"""Edits an INI file the way DevStack's ``iniset`` / ``iniset_multiline`` do (this project's own
code, written from the documented behaviour of DevStack's inc/ini-config, not a copy of it).

    ini_edit.py set FILE SECTION OPTION VALUE
    ini_edit.py setmulti FILE SECTION OPTION [VALUE...]

The file is edited line by line, never re-serialised: comments, blank lines, the order of sections
and options and every repeated (multi-valued) option elsewhere stay exactly as they were, as with
DevStack's sed-based editing, so that devstack/lib/nova-dt writes the same bytes under this shim
(tests/devstack/ini-functions) as under DevStack's real functions (checked by tests/devstack when
NOVA_DT_DEVSTACK_DIR points at a DevStack checkout).

Semantics (DevStack's, for the well-formed files DevStack and nova-dt write):

- A *section* line is one that starts with ``[SECTION]``; its *range* runs from that line to the
  next line starting with ``[`` and holding a ``]`` (that line included), and starts again at
  every later ``[SECTION]`` line. An *option* line in a range is one starting with ``OPTION``,
  optional blanks and ``=``.
- ``set``: a missing file is created; a missing section is appended at the end as ``\\n[SECTION]\\n``
  (so a blank line before it); a missing option is inserted as ``OPTION = VALUE`` right after every
  section line; an existing option keeps everything up to and including the blanks after ``=`` and
  gets VALUE as the rest of its line, in every range.
- ``setmulti``: a missing section is appended as above; otherwise every option line in the ranges
  is deleted. Then ``OPTION = V`` lines, one per VALUE in the given order, are inserted right after
  every section line.

What DevStack's shell functions do to values before that (word splitting, globbing, ``echo``
options, sed escapes) is checked by the callers in ini-functions, which refuse values DevStack
would change; this helper writes values as given.
"""
import os
import re
import sys


def _read(path):
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write(path, text):
    # In place, as sed -i / tee --append keep the file (mode and owner of an existing file stay).
    exists = os.path.exists(path)
    with open(path, "r+" if exists else "w", encoding="utf-8", newline="") as f:
        f.seek(0)
        f.write(text)
        f.truncate()


def _is_section_line(line, section):
    return line.startswith("[" + section + "]")


_ANY_SECTION = re.compile(r"\[.*\]")


def _in_ranges(lines, section):
    """Indexes of the lines inside SECTION's ranges (sed's /^\\[S\\]/,/^\\[.*\\]/)."""
    inside = set()
    active = False
    for i, line in enumerate(lines):
        if not active:
            if _is_section_line(line, section):
                active = True
                inside.add(i)
            continue
        inside.add(i)
        if _ANY_SECTION.match(line):
            active = False
    return inside


def _option_re(option):
    return re.compile(re.escape(option) + r"[ \t]*=")


def _insert_after_sections(lines, section, new_lines):
    out = []
    for line in lines:
        out.append(line)
        if _is_section_line(line, section):
            if not line.endswith("\n"):
                # sed ends an unterminated last line before the text it appends.
                out[-1] = line + "\n"
            out.extend(new_lines)
    return out


def _ensure_section(text, section):
    """Returns (text, existed)."""
    lines = text.splitlines(keepends=True)
    if any(_is_section_line(line, section) for line in lines):
        return text, True
    return text + "\n[" + section + "]\n", False


def iniset(path, section, option, value):
    if not section or not option:
        return
    text = _read(path) or ""
    text, _ = _ensure_section(text, section)
    lines = text.splitlines(keepends=True)
    rng = _in_ranges(lines, section)
    opt = _option_re(option)
    if not any(i in rng and opt.match(lines[i]) for i in range(len(lines))):
        lines = _insert_after_sections(lines, section, ["%s = %s\n" % (option, value)])
    else:
        prefix = re.compile(re.escape(option) + r"[ \t]*=[ \t]*")
        for i in sorted(rng):
            m = prefix.match(lines[i])
            if m:
                end = "\n" if lines[i].endswith("\n") else ""
                lines[i] = m.group(0) + value + end
    _write(path, "".join(lines))


def iniset_multiline(path, section, option, values):
    text = _read(path) or ""
    text, existed = _ensure_section(text, section)
    lines = text.splitlines(keepends=True)
    if existed:
        rng = _in_ranges(lines, section)
        opt = _option_re(option)
        lines = [line for i, line in enumerate(lines) if not (i in rng and opt.match(line))]
    lines = _insert_after_sections(lines, section, ["%s = %s\n" % (option, v) for v in values])
    _write(path, "".join(lines))


def main(argv):
    if len(argv) >= 6 and argv[1] == "set" and len(argv) == 6:
        iniset(argv[2], argv[3], argv[4], argv[5])
        return 0
    if len(argv) >= 5 and argv[1] == "setmulti":
        iniset_multiline(argv[2], argv[3], argv[4], argv[5:])
        return 0
    sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
