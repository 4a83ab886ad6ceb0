"""tests/devstack/ini-functions: DevStack's iniset/iniset_multiline semantics, for lib/nova-dt
outside DevStack. Every case here also runs through DevStack's real functions in
test_devstack_real (with NOVA_DT_DEVSTACK_DIR), which must write the same bytes."""
import os
import shlex

from tests import base

# (name, initial file text or None for no file, bash calls) → the expected text.
CASES = [
    ('new file, new option', None,
     'iniset f DEFAULT debug True',
     '\n[DEFAULT]\ndebug = True\n'),
    ('new section appended after a blank line', '[DEFAULT]\na = 1\n',
     'iniset f libvirt file_backed_memory 1024',
     '[DEFAULT]\na = 1\n\n[libvirt]\nfile_backed_memory = 1024\n'),
    ('new option goes right after the section line', '[s]\na = 1\nb = 2\n',
     'iniset f s c 3',
     '[s]\nc = 3\na = 1\nb = 2\n'),
    ('replace keeps the spelling up to the value', '[s]\na=1\nb   =  2\n',
     'iniset f s a x; iniset f s b y',
     '[s]\na=x\nb   =  y\n'),
    ('same option in another section and comments untouched',
     '# top\n[s]\n#a = commented\na = 1\n[t]\na = 2\n',
     'iniset f t a 3',
     '# top\n[s]\n#a = commented\na = 1\n[t]\na = 3\n'),
    ('a value with blanks, & and $', '[s]\n',
     'iniset f s a "x & y \\$z"; iniset f s b "p&q"',
     '[s]\nb = p&q\na = x & y $z\n'),
    ('empty value', '[s]\na = 1\n',
     'iniset f s a ""; iniset f s b ""',
     '[s]\nb = \na = \n'),
    ('multiline replaces every line of the option, in order', '[s]\nx = 0\nd = a\nd = b\ny = 1\n',
     'iniset_multiline f s d one two three',
     '[s]\nd = one\nd = two\nd = three\nx = 0\ny = 1\n'),
    ('multiline into a new section and file', None,
     'iniset_multiline f filter_scheduler available_filters a.B c.D',
     '\n[filter_scheduler]\navailable_filters = a.B\navailable_filters = c.D\n'),
    ('multiline with no value deletes the option', '[s]\nd = a\ne = 1\n',
     'iniset_multiline f s d',
     '[s]\ne = 1\n'),
    ('multiline drops empty values', '[s]\n',
     'iniset_multiline f s d "" a ""',
     '[s]\nd = a\n'),
    ('multiline leaves the other sections alone', '[s]\nd = a\n[t]\nd = b\n',
     'iniset_multiline f t d c',
     '[s]\nd = a\n[t]\nd = c\n'),
    ('a file without a final newline', '[s]\na = 1',
     'iniset f s a 2; iniset f t b 3',
     '[s]\na = 2\n[t]\nb = 3\n'),
]

REFUSED = [
    ('iniset', 'a  b'),          # runs of blanks are joined by one
    ('iniset', ' a'),            # leading blank dropped
    ('iniset', 'a\tb'),
    ('iniset', 'a\\nb'),         # Zed's sed reads backslashes (later DevStack escapes them)
    ('iniset', '-n'),            # echo's option
    ('iniset', '-e x'),
    ('iniset', 'line\nbreak'),
    ('iniset', 'gl*b'),          # matches a file in the current directory
    ('iniset_multiline', 'a b'),  # split into two values
    ('iniset_multiline', 'gl*b'),
]


def run_case(tmp, initial, calls, devstack=False):
    """Runs `calls` in a scratch directory with file f; returns f's text (None: no file)."""
    os.makedirs(tmp, exist_ok=True)
    f = os.path.join(tmp, 'f')
    if initial is not None:
        with open(f, 'w') as fh:
            fh.write(initial)
    base.lib(calls, cwd=tmp, devstack=devstack)
    if not os.path.exists(f):
        return None
    with open(f) as fh:
        return fh.read()


class TestIniShim(base.TempDirTestCase):
    def test_cases(self):
        for i, (name, initial, calls, expected) in enumerate(CASES):
            with self.subTest(name):
                got = run_case(self.path('case%d' % i), initial, calls)
                self.assertEqual(expected, got)

    def test_refuses_what_devstack_would_change(self):
        # A file whose name the glob value matches, as DevStack's unquoted expansion would.
        self.write('glob', '')
        for func, value in REFUSED:
            with self.subTest(func=func, value=value):
                self.write('f', '[s]\n')
                p = base.lib('%s f s opt %s' % (func, shlex.quote(value)), cwd=self.tmp,
                             check=False)
                self.assertEqual(1, p.returncode, p.stderr)
                self.assertIn("would not write this value as given", p.stderr)
                self.assertEqual('[s]\n', self.read('f'))

    def test_glob_characters_that_match_nothing_are_kept(self):
        # DevStack's unquoted expansion leaves a pattern that matches no file as it is.
        self.write('f', '[s]\n')
        base.lib('iniset f s a "[fd00::3]:7070"; iniset_multiline f s b "x*y"', cwd=self.tmp)
        self.assertEqual('[s]\nb = x*y\na = [fd00::3]:7070\n', self.read('f'))

    def test_sudo_form_not_provided(self):
        self.write('f', '[s]\n')
        p = base.lib('iniset -sudo f s a 1', cwd=self.tmp, check=False)
        self.assertEqual(1, p.returncode)
        self.assertIn('-sudo is not provided', p.stderr)
