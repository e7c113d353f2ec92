"""csrc builds on every architecture (x86-64, ARM64): whatever only one architecture's compiler
knows (x86's __builtin_ia32_* and __builtin_cpu_*, its intrinsics and their headers, target
attributes, inline assembly; ARM's NEON and SVE intrinsics and headers) stands inside a
preprocessor branch that no other architecture compiles, e.g. `#if defined(__x86_64__)`.
tools/cross_build_aarch64.sh checks the same by compiling for ARM64; this scan runs in the normal
suite without a cross compiler, reading the sources only."""

import itertools
import re
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "csrc"
SOURCE_SUFFIXES = (".h", ".cpp", ".cu", ".cuh")

# What each architecture's guard may test: macros that only its compilers define.
ARCHITECTURE_MACROS = {
    "x86": re.compile(
        r"__x86_64__|__x86_64|__amd64__|__amd64|__i386__|__i386|_M_X64|_M_IX86"
        r"|__(?:SSE|AVX|FMA|F16C|BMI)\w*__"
    ),
    "arm": re.compile(r"__aarch64__|_M_ARM64|__arm__|__ARM_\w+"),
}
# Inline assembly is some architecture's: a guard of any architecture will do.
ARCHITECTURE_MACROS["asm"] = re.compile(
    "|".join(ARCHITECTURE_MACROS[a].pattern for a in ("x86", "arm"))
)

# Code that only that architecture's compilers take, outside comments.
ARCHITECTURE_ONLY = {
    "x86": re.compile(
        r"\b__builtin_ia32_\w+"
        r"|\b__builtin_cpu_(?:supports|is|init)\b"
        r"|#\s*include\s*<(?:\w*intrin|cpuid)\.h>"
        r"|\b_mm\d*_\w+|\b__m(?:64|128|256|512)\w*\b"
        r"|\b__?rdtscp?\b"
        r"|\b__attribute__\s*\(\(\s*target\s*\(|#\s*pragma\s+GCC\s+target\b"
    ),
    "arm": re.compile(
        r"#\s*include\s*<arm_(?:neon|sve|acle|fp16|bf16)\.h>"
        r"|\bv(?:ld|st)\d+q?_(?:lane_)?[fsu]\d+\b|\bv\w+q_[fsu]\d+\b"
        r"|\bsv(?:float|int|uint|bool)\w*_t\b|\b__builtin_aarch64_\w+"
    ),
    "asm": re.compile(r"\basm\b|\b__asm\w*"),
}


def strip_comments(text):
    """The text with its comments blanked (line breaks kept, so line numbers hold), and its
    string literals' contents kept (target("avx2") is what a target attribute says)."""
    out, i = [], 0
    pattern = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
    for match in pattern.finditer(text):
        out.append(text[i : match.start()])
        token = match.group(0)
        out.append(token if token[0] in "\"'" else re.sub(r"[^\n]", " ", token))
        i = match.end()
    out.append(text[i:])
    return "".join(out)


def joined_lines(text):
    """(line number, logical line) with backslash continuations joined."""
    lines, number, pending, start = [], 0, "", 0
    for number, line in enumerate(text.split("\n"), 1):
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append((start, pending + line))
        pending = ""
    if pending:
        lines.append((start, pending))
    return lines


def to_python(condition):
    """A preprocessor condition as a Python expression over atoms a0, a1, ... (one per macro it
    tests), and the macro names of those atoms, in order."""
    names = []

    def atom(name):
        if name not in names:
            names.append(name)
        return f"a{names.index(name)}"

    expression = re.sub(
        r"\bdefined\s*\(\s*(\w+)\s*\)|\bdefined\s+(\w+)",
        lambda m: atom(m.group(1) or m.group(2)),
        condition,
    )
    # Other identifiers are macros' values: an atom of their own (0 or 1 in the evaluation).
    expression = re.sub(r"\b(?!a\d+\b)([A-Za-z_]\w*)\b", lambda m: atom(m.group(1)), expression)
    expression = re.sub(r"\b(\d+)[uUlL]*\b", r"\1", expression)
    expression = (
        expression.replace("&&", " and ")
        .replace("||", " or ")
        .replace("!=", " __ne__ ")
        .replace("!", " not ")
        .replace(" __ne__ ", " != ")
    )
    return expression, names


def excludes(architecture, conditions):
    """Whether a branch that is taken exactly when every one of `conditions` (preprocessor
    expressions, each "!(...)" for a branch not taken) holds can never be taken when none of the
    architecture's macros is defined: then only that architecture compiles it. A condition this
    cannot read counts as no guard."""
    if not conditions:
        return False
    expression, names = to_python(" && ".join(f"({c})" for c in conditions))
    own = [ARCHITECTURE_MACROS[architecture].fullmatch(name) is not None for name in names]
    free = [i for i, is_own in enumerate(own) if not is_own]
    if len(free) > 12:
        return False
    try:
        code = compile(expression, "<condition>", "eval")
        for values in itertools.product((0, 1), repeat=len(free)):
            atoms = {f"a{i}": 0 for i in range(len(names))}
            atoms.update({f"a{i}": value for i, value in zip(free, values)})
            if eval(code, {"__builtins__": {}}, atoms):  # noqa: S307 (our own expressions)
                return False
    except (SyntaxError, TypeError, NameError, ZeroDivisionError):
        return False
    return True


def unguarded(text, architecture):
    """(line number, code) of each use of the architecture's own code outside a branch that only
    that architecture compiles."""
    found = []
    # Per open #if: the conditions of its earlier branches (not taken) and of the current one.
    stack = []
    for number, line in joined_lines(strip_comments(text)):
        directive = re.match(r"\s*#\s*(if|ifdef|ifndef|elif|else|endif)\b(.*)", line)
        if directive:
            keyword, rest = directive.group(1), directive.group(2).strip()
            if keyword == "ifdef":
                stack.append(([], f"defined({rest})"))
            elif keyword == "ifndef":
                stack.append(([], f"!defined({rest})"))
            elif keyword == "if":
                stack.append(([], rest))
            elif keyword in ("elif", "else") and stack:
                earlier, current = stack[-1]
                earlier = earlier + [f"!({current})"]
                stack[-1] = (earlier, rest if keyword == "elif" else "1")
            elif keyword == "endif" and stack:
                stack.pop()
            continue
        if not ARCHITECTURE_ONLY[architecture].search(line):
            continue
        conditions = [c for earlier, current in stack for c in earlier + [current]]
        if not excludes(architecture, conditions):
            found.append((number, line.strip()))
    return found


def sources():
    return sorted(p for p in CSRC.rglob("*") if p.suffix in SOURCE_SUFFIXES)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURE_ONLY))
def test_architecture_specific_code_is_guarded(architecture):
    problems = [
        f"{path.relative_to(CSRC.parent)}:{number}: {code}"
        for path in sources()
        for number, code in unguarded(path.read_text(), architecture)
    ]
    assert not problems, (
        f"{architecture}-only code outside a guard that only {architecture} compiles "
        "(e.g. #if defined(__x86_64__) ... #else portable code #endif):\n" + "\n".join(problems)
    )


def test_the_scan_sees_the_x86_code_it_checks():
    """The scan finds the x86 code that csrc has (so a change of its patterns cannot make the
    test above pass by finding nothing)."""
    seen = " ".join(
        line
        for path in sources()
        for line in strip_comments(path.read_text()).split("\n")
        if ARCHITECTURE_ONLY["x86"].search(line)
    )
    for expected in ("__builtin_cpu_supports", "__builtin_ia32_pause", "target("):
        assert expected in seen


@pytest.mark.parametrize(
    "snippet, flagged",
    [
        ("__builtin_ia32_pause();", True),
        ("#if defined(__x86_64__)\n__builtin_ia32_pause();\n#endif", False),
        ("#ifdef __x86_64__\n#include <immintrin.h>\n#endif", False),
        ("#if defined(__x86_64__) || defined(__i386__)\n_mm_pause();\n#endif", False),
        ("#if defined(__x86_64__) && defined(__GNUC__)\n__builtin_cpu_init();\n#endif", False),
        ("#if defined(__x86_64__) || defined(__aarch64__)\n__builtin_ia32_pause();\n#endif", True),
        ("#if defined(__GNUC__)\n__builtin_cpu_init();\n#endif", True),
        ("#ifndef __x86_64__\n#else\n__builtin_cpu_init();\n#endif", False),
        ("#if !defined(__x86_64__)\nint x;\n#else\n__m256 v;\n#endif", False),
        ("#if defined(__aarch64__)\nint x;\n#else\n__m256 v;\n#endif", True),
        ("#if defined(__aarch64__)\nint x;\n#elif defined(__x86_64__)\n__m256 v;\n#endif", False),
        ("#if defined(__x86_64__)\n#else\nint x;\n#endif\n__builtin_ia32_pause();", True),
        ("#if defined(__x86_64__)\n#if 1\n#endif\nint y;\n#endif\n_mm_pause();", True),
        ("#if defined(__AVX2__)\n__m256 v;\n#endif", False),
        ('#define K(a) __attribute__((target("avx2"))) a\n', True),
        (
            '#if defined(__x86_64__)\n#define K(a) \\\n  __attribute__((target("avx2"))) a\n#endif',
            False,
        ),
        ("// __builtin_ia32_pause() in a comment\n/* _mm_pause() */", False),
    ],
)
def test_the_scan_flags_unguarded_x86_code(snippet, flagged):
    assert bool(unguarded(snippet, "x86")) == flagged


@pytest.mark.parametrize(
    "snippet, flagged",
    [
        ("#include <arm_neon.h>", True),
        (
            "#if defined(__aarch64__)\n#include <arm_neon.h>\n"
            "float32x4_t v = vld1q_f32(p);\n#endif",
            False,
        ),
        ("float32x4_t v = vld1q_f32(p);", True),
        ("#if defined(__ARM_NEON)\nvst1q_f32(p, v);\n#endif", False),
    ],
)
def test_the_scan_flags_unguarded_arm_code(snippet, flagged):
    assert bool(unguarded(snippet, "arm")) == flagged


@pytest.mark.parametrize(
    "snippet, flagged",
    [
        ('void f() { asm volatile("yield"); }', True),
        (
            '#if defined(__aarch64__)\nasm volatile("yield");\n#elif defined(__x86_64__)\n'
            '__asm__ __volatile__("pause");\n#endif',
            False,
        ),
    ],
)
def test_the_scan_flags_unguarded_assembly(snippet, flagged):
    assert bool(unguarded(snippet, "asm")) == flagged
