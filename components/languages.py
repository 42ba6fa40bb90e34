"""The extension-to-language table that labels source files (documented in docs/languages.md).

Labels come from file names only, so they are cheap (decided before a file is read) and
reproducible. Decisions worth knowing:

- ``.h`` is not labelled: a header's name does not say whether it is C, C++ or Objective-C, and in
  the default corpus many ``.h`` files are C++ (labelling them C made the labels, and so the test
  metrics, wrong). Map it with ``ingest.extra_extensions: {".h": "C"}`` when your code base is all
  C. ``.hpp``/``.hh``/``.hxx`` are ``C++``.
- ``.txt`` is not labelled (prose and data), except the special name ``CMakeLists.txt``.
- Exact file names (``Makefile``, ``Dockerfile``, ...) win over extensions.
- The longest matching suffix wins (``x.d.ts`` is TypeScript through ``.ts``; ``x.cmake.in`` is
  not labelled because ``.in`` is not in the table).

``ingest.extra_extensions`` overrides the table: a key starting with ``.`` is an extension
(lowercase), any other key an exact file name; mapping to ``""`` ignores those files.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

_BY_LANGUAGE: dict[str, tuple[str, ...]] = {
    "Python": (".py", ".pyi", ".pyw"),
    "Cython": (".pyx", ".pxd", ".pxi"),
    "C": (".c",),
    "C++": (".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".ipp", ".tpp"),
    "CUDA": (".cu", ".cuh"),
    "Objective-C": (".m",),
    "JavaScript": (".js", ".mjs", ".cjs", ".jsx"),
    "TypeScript": (".ts", ".tsx", ".mts", ".cts"),
    "CSS": (".css",),
    "SCSS": (".scss",),
    "HTML": (".html", ".htm", ".xhtml"),
    "XML": (".xml", ".xsd", ".xsl", ".xslt", ".wsdl", ".plist"),
    "JSON": (".json", ".geojson"),
    "YAML": (".yaml", ".yml"),
    "TOML": (".toml",),
    "INI": (".ini", ".cfg"),
    "Markdown": (".md", ".markdown"),
    "reStructuredText": (".rst",),
    "Shell": (".sh", ".bash", ".zsh", ".ksh"),
    "PowerShell": (".ps1", ".psm1"),
    "Batchfile": (".bat", ".cmd"),
    "Perl": (".pl", ".pm"),
    "SQL": (".sql",),
    "CMake": (".cmake",),
    "Makefile": (".mk", ".mak"),
    "Fortran": (".f", ".f77", ".f90", ".f95", ".f03", ".f08", ".for"),
    "Tcl": (".tcl", ".tk"),
    "R": (".r",),
    "Jinja": (".j2", ".jinja", ".jinja2"),
    "Protocol Buffer": (".proto",),
    "Go": (".go",),
    "Rust": (".rs",),
    "Java": (".java",),
    "Kotlin": (".kt", ".kts"),
    "Scala": (".scala",),
    "Ruby": (".rb",),
    "PHP": (".php",),
    "Lua": (".lua",),
    "Swift": (".swift",),
    "C#": (".cs",),
    "Haskell": (".hs",),
    "Julia": (".jl",),
    "Awk": (".awk",),
    "Vim Script": (".vim",),
    "Emacs Lisp": (".el",),
    "TeX": (".tex", ".sty"),
    "Assembly": (".s", ".asm"),
    "GraphQL": (".graphql", ".gql"),
    "Thrift": (".thrift",),
    "Starlark": (".bzl",),
    "Dart": (".dart",),
    "Groovy": (".groovy", ".gradle"),
}

_BY_NAME: dict[str, str] = {
    "CMakeLists.txt": "CMake",
    "Makefile": "Makefile",
    "makefile": "Makefile",
    "GNUmakefile": "Makefile",
    "Dockerfile": "Dockerfile",
    "Containerfile": "Dockerfile",
    "meson.build": "Meson",
    "BUILD.bazel": "Starlark",
    "WORKSPACE": "Starlark",
    "Jenkinsfile": "Groovy",
    "Gemfile": "Ruby",
    "Rakefile": "Ruby",
}

#: Built-in extension (with dot, lowercase) -> language.
EXTENSIONS: Mapping[str, str] = MappingProxyType(
    {ext: lang for lang, exts in _BY_LANGUAGE.items() for ext in exts}
)
#: Built-in exact file name -> language (wins over the extension).
FILE_NAMES: Mapping[str, str] = MappingProxyType(dict(_BY_NAME))


class LanguageTable:
    """The built-in table with ``ingest.extra_extensions`` merged over it.

    ``table.language_of("pkg/setup.py")`` -> ``"Python"``; ``None`` when the name is not labelled.
    """

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self.extensions: dict[str, str] = dict(EXTENSIONS)
        self.file_names: dict[str, str] = dict(FILE_NAMES)
        for key, language in (overrides or {}).items():
            if key.startswith("."):
                self.extensions[key.lower()] = language
            else:
                self.file_names[key] = language
        self._max_dots = max((k.count(".") for k in self.extensions), default=1)

    def language_of(self, path: str) -> str | None:
        """The language of a file from its name (a path; only the last part is used)."""
        name = path.rsplit("/", 1)[-1]
        if name in self.file_names:
            return self.file_names[name] or None
        lowered = name.lower()
        if self._max_dots == 1:  # the built-in table: only the last suffix can match (fast path)
            i = lowered.rfind(".")
            return (self.extensions.get(lowered[i:]) or None) if i > 0 else None
        # Longest suffix first: ".d.ts" before ".ts"; a leading-dot name (".bashrc") has no suffix.
        start = 1 if lowered.startswith(".") else 0
        dots = [i for i in range(start, len(lowered)) if lowered[i] == "."]
        for i in dots[-self._max_dots :]:
            language = self.extensions.get(lowered[i:])
            if language is not None:
                return language or None
        return None

    def languages(self) -> list[str]:
        """Every language the table can produce, sorted."""
        return sorted({v for v in (*self.extensions.values(), *self.file_names.values()) if v})


def language_table(overrides: Mapping[str, str] | None = None) -> LanguageTable:
    """The built-in table merged with ``overrides`` (``IngestConfig.extra_extensions``)."""
    return LanguageTable(overrides)
