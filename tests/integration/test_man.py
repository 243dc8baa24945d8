"""The manual pages, as a user reads them: man/gatehouse.8 and
man/gatehouse.conf.5 render with man(1) and groff(1) without a warning, and
they keep up with the source: every directive registered in a kDirectives
table, every variable a module declares and every command-line option has
its entry.

A directive added without documentation fails test_every_directive_has_an_entry
(STYLE.md, section 6: a directive is found by one grep in its table row, its
conf field's comment and man/gatehouse.conf.5). No gatehouse binary is
needed.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MAN_DIR = REPO_ROOT / "man"
SRC_DIR = REPO_ROOT / "src"

PAGES = {
    # page: the NAME line as man(1) renders it
    "gatehouse.8": "gatehouse - reverse proxy and HTTP server",
    "gatehouse.conf.5": "gatehouse.conf - configuration file of the gatehouse",
}

TIMEOUT = 60


def page_text(name):
    return (MAN_DIR / name).read_text(encoding="utf-8")


def need(tool, optional=False):
    path = shutil.which(tool)
    if not path:
        where = f"optional, Debian package {tool}" if optional else "Debian package: see contrib/install-deps.sh"
        pytest.skip(f"{tool} is not installed ({where})")
    return path


def plain(text):
    """man(1) output as plain text: no overstriking, no SGR sequences, and
    the typographic hyphen and minus as "-", whatever the locale."""
    text = re.sub(r".\x08", "", text)
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return text.replace("\u2010", "-").replace("\u2212", "-")


# ---- the source ------------------------------------------------------------

def table_bodies(source, table):
    """The text between `table[] = {` and its closing `};` in a C++ file."""
    bodies = []
    for m in re.finditer(re.escape(table) + r"\[\]\s*=\s*\{", source):
        end = source.find("\n};", m.end())
        assert end > 0, f"no end of {table} after offset {m.start()}"
        bodies.append(source[m.end():end])
    return bodies


def built_modules():
    """The module list ./configure writes to objs/modules.cc: the modules
    that are registered, in order ("process:core_module" ...)."""
    configure = (REPO_ROOT / "configure").read_text(encoding="utf-8")
    m = re.search(r'^MODULES="([^"]*)"', configure, re.M)
    assert m, "no MODULES= list in configure"
    return [entry.split(":")[1] for entry in m.group(1).split()]


def module_files():
    """{module: file} for every module of the list: the file that defines
    `const conf::Module <module>{`."""
    files = {}
    wanted = built_modules()
    for path in sorted(SRC_DIR.rglob("*.cc")):
        source = path.read_text(encoding="utf-8")
        for name in wanted:
            if re.search(r"const\s+conf::Module\s+" + name + r"\s*\{", source):
                files[name] = path
    missing = [name for name in wanted if name not in files]
    assert not missing, f"modules of configure not defined in src/: {missing}"
    return files


def registered_directives():
    """{name: file} of every directive in the kDirectives table of a module
    that ./configure builds. A table in a file whose module is not in the
    list yet (work in progress) is not registered: it needs its entries
    once the module joins the list."""
    found = {}
    for path in sorted(set(module_files().values())):
        for body in table_bodies(path.read_text(encoding="utf-8"), "kDirectives"):
            for name in re.findall(r'\{"([a-z_0-9]+)",', body):
                found[name] = path.relative_to(REPO_ROOT)
    return found


def declared_variables():
    """{name: file} of every VariableDef row of the built modules
    (kCoreVariables, a module's kVariables); prefix variables end in "_"."""
    found = {}
    paths = set(module_files().values())
    paths.update(p for p in SRC_DIR.rglob("*.cc")
                 if "kCoreVariables[] =" in p.read_text(encoding="utf-8"))
    for path in sorted(paths):
        source = path.read_text(encoding="utf-8")
        for table in ("kCoreVariables", "kVariables"):
            for body in table_bodies(source, table):
                for name in re.findall(r'\{"([a-z_0-9]+)",', body):
                    found[name] = path.relative_to(REPO_ROOT)
    return found


def test_source_extraction_finds_the_tables():
    """Guards the extractors: if the tables change shape, the coverage
    tests below must not pass by finding nothing."""
    directives = registered_directives()
    for name in ["daemon", "worker_connections", "listen", "location", "rewrite",
                 "return", "map", "root", "access_log", "add_header"]:
        assert name in directives, name
    # The simple row pattern finds a subset of what the table parser finds
    # (rewrite.cc names its context sets kScript and kFlags, which it
    # misses).
    simple = set()
    for path in set(module_files().values()):
        simple.update(re.findall(r'\{"([a-z_0-9]+)",\s*conf::k', path.read_text(encoding="utf-8")))
    assert simple <= set(directives), sorted(simple - set(directives))
    assert {"rewrite", "set", "rewrite_log"} <= set(directives)

    variables = declared_variables()
    for name in ["http_", "remote_addr", "uri", "status", "document_root"]:
        assert name in variables, name


# ---- rendering ---------------------------------------------------------------

@pytest.mark.parametrize("page", sorted(PAGES))
def test_man_renders(page):
    man = need("man")
    env = dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat")
    r = subprocess.run([man, "-l", str(MAN_DIR / page)], capture_output=True, text=True,
                       env=env, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    out = plain(r.stdout)
    assert re.search(r"^NAME$", out, re.M), out[:500]
    assert PAGES[page] in " ".join(out.split()), out[:500]
    assert "SEE ALSO" in out
    # Nothing of the source leaks through as text (an unknown macro, a
    # stray escape).
    assert not re.search(r"^\s*\.[A-Za-z]{1,2}\b", out, re.M), \
        re.search(r"^\s*\.[A-Za-z]{1,2}\b.*$", out, re.M).group(0)
    assert "\\f" not in out and "\\(" not in out


@pytest.mark.parametrize("page", sorted(PAGES))
def test_groff_has_no_warnings(page):
    groff = need("groff")
    r = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", str(MAN_DIR / page)],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr


@pytest.mark.parametrize("page", sorted(PAGES))
def test_mandoc_lint(page):
    mandoc = need("mandoc", optional=True)  # not in install-deps.sh
    r = subprocess.run([mandoc, "-T", "lint", "-W", "warning", str(MAN_DIR / page)],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.stdout + r.stderr == "", r.stdout + r.stderr


# ---- coverage ------------------------------------------------------------------

def entry_pattern(name):
    # ".B name" or ".BR name ;" (quoted or not) at the start of a line.
    return re.compile(r'^\.BR?\s+"?' + re.escape(name) + r'(?=[\s";]|$)', re.M)


def test_every_directive_has_an_entry():
    text = page_text("gatehouse.conf.5")
    missing = [f"{name} ({where})" for name, where in sorted(registered_directives().items())
               if not entry_pattern(name).search(text)]
    assert not missing, ("directives without a \".B name\" entry in man/gatehouse.conf.5: "
                         + ", ".join(missing))


def directive_entries(text):
    """{headword: syntax line} of the DIRECTIVES section: an entry is one
    or more ".B name" lines, each followed by its syntax, then an indented
    block starting with "Default:" and "Context:" lines."""
    section = text[text.index("\n.SH DIRECTIVES\n"):text.index("\n.SH REQUEST PROCESSING\n")]
    entries = {}
    head = r'\.BR?\s+"?([a-z_0-9]+)"?(?:\s+[^\n]*)?\n(?:[^.\n][^\n]*\n)?(?:\.br\n)?'
    pattern = re.compile(r"\n(?:\.PP|\.SS [^\n]*)\n((?:" + head + r")+)\.RS\n\.nf\nDefault: [^\n]+\nContext: [^\n]+\n\.fi\n")
    for m in pattern.finditer(section):
        for name in re.findall(r"^\.BR?\s+\"?([a-z_0-9]+)", m.group(1), re.M):
            entries[name] = m.group(1)
    return entries


def test_every_directive_entry_says_default_and_context():
    """Each directive has an entry of its own: ".B name", its syntax, then
    "Default:" and "Context:", in the DIRECTIVES section."""
    entries = directive_entries(page_text("gatehouse.conf.5"))
    missing = [f"{name} ({where})" for name, where in sorted(registered_directives().items())
               if name not in entries]
    assert not missing, "directives without a full entry (syntax, Default:, Context:): " + ", ".join(missing)


def test_every_entry_is_a_registered_directive():
    """The other way round: the page documents no directive that the
    source does not register (a removed or renamed directive, or one
    documented before it exists)."""
    entries = directive_entries(page_text("gatehouse.conf.5"))
    registered = registered_directives()
    stale = sorted(name for name in entries if name not in registered)
    assert not stale, "entries in man/gatehouse.conf.5 for directives no module registers: " + ", ".join(stale)


def test_every_listed_variable_is_declared():
    """Every $name the VARIABLES section lists exists (a prefix one ends
    in "_", as $http_)."""
    text = page_text("gatehouse.conf.5")
    variables = text[text.index("\n.SH VARIABLES\n"):text.index("\n.SH ERROR RESPONSES\n")]
    # The tag lines of the list: the line after each ".TP".
    tags = re.findall(r"^\.TP[^\n]*\n([^\n]+)", variables, re.M)
    listed = {name for tag in tags for name in re.findall(r"\$([a-z_][a-z_0-9]*)", tag)}
    assert len(listed) > 20, listed
    declared = declared_variables()
    unknown = sorted(name for name in listed if name not in declared)
    assert not unknown, "variables listed in man/gatehouse.conf.5 that nothing declares: " + ", ".join(unknown)


def test_every_variable_is_listed():
    text = page_text("gatehouse.conf.5")
    variables = text[text.index("\n.SH VARIABLES\n"):text.index("\n.SH ERROR RESPONSES\n")]
    missing = [f"${name} ({where})" for name, where in sorted(declared_variables().items())
               if not re.search(re.escape("$" + name) + r"(?![a-z0-9_])", variables)]
    assert not missing, "variables missing from VARIABLES in man/gatehouse.conf.5: " + ", ".join(missing)


def test_every_option_is_documented():
    """The options of the usage text (src/process/options.cc) and the -s
    signals (src/process/signals.cc) have their entries in gatehouse.8."""
    usage = (SRC_DIR / "process" / "options.cc").read_text(encoding="utf-8")
    flags = set(re.findall(r'"  (-[?a-zA-Z])[ ,]', usage)) | set(re.findall(r'"  -\?,(-[a-zA-Z]) ', usage))
    assert {"-?", "-h", "-v", "-V", "-t", "-T", "-q", "-s", "-p", "-e", "-c", "-g"} <= flags, flags
    text = page_text("gatehouse.8")
    options = text[text.index("\n.SH OPTIONS\n"):text.index("\n.SH SIGNALS\n")]
    tags = [line for line in options.splitlines() if re.match(r"\.(B|BI|BR) ", line)]
    for flag in sorted(flags):
        roff = "\\-" + flag[1:]
        assert any(re.search(re.escape(roff) + r'(?![A-Za-z])', t) for t in tags), flag
    signals = (SRC_DIR / "process" / "signals.cc").read_text(encoding="utf-8")
    for name in re.findall(r'name == "([a-z]+)"', signals):
        assert re.search(r"^\.B " + name + "$", options, re.M), f"-s {name}"
