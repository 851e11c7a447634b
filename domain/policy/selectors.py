"""The field and label selector grammars, as far as request attributes need them.

kube-apiserver names a list or watch after one object when its field selector requires
`metadata.name=<x>` (so RBAC `resourceNames` can allow it), but only when the whole set of list
options decodes: an invalid label selector anywhere in the query leaves the request unnamed.
So `attributes` needs to know two things, reproduced here from apimachinery's `fields` and
`labels` packages: the exact-match value a field selector requires, and whether a label
selector parses. Nothing here evaluates a selector against objects.
"""

from __future__ import annotations

import re

# --- field selectors (apimachinery pkg/fields) --------------------------------------------

_FIELD_OPERATORS = ("!=", "==", "=")  # checked in this order at every position


class SelectorSyntaxError(ValueError):
    """A selector kube-apiserver would refuse to parse (internal to attribute parsing)."""


def _split_field_terms(selector: str) -> list[str]:
    """Split on commas that are not escaped with a backslash."""
    terms: list[str] = []
    start = 0
    escaped = False
    for i, ch in enumerate(selector):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    return terms


def _split_field_term(term: str) -> tuple[str, str, str]:
    for i in range(len(term)):
        for op in _FIELD_OPERATORS:
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    raise SelectorSyntaxError(f"invalid field selector term {term!r}")


def _unescape_field_value(value: str) -> str:
    if not any(c in value for c in "\\,="):
        return value
    out: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise SelectorSyntaxError(f"invalid escape sequence \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise SelectorSyntaxError(f"unescaped {ch!r} in field selector value")
        else:
            out.append(ch)
    if escaped:
        raise SelectorSyntaxError("field selector value ends with a lone backslash")
    return "".join(out)


def parse_field_selector(selector: str) -> tuple[tuple[str, str, str], ...]:
    """Terms `(field, op, value)` of a field selector, sorted as apimachinery sorts them.

    `op` is `=` (for both `=` and `==`) or `!=`. Raises `SelectorSyntaxError` where
    `fields.ParseSelector` fails.
    """
    terms: list[tuple[str, str, str]] = []
    for part in sorted(_split_field_terms(selector)) if selector else ():
        if not part:
            continue
        lhs, op, rhs = _split_field_term(part)
        terms.append((lhs, "!=" if op == "!=" else "=", _unescape_field_value(rhs)))
    return tuple(terms)


def required_exact_match(terms: tuple[tuple[str, str, str], ...], field: str) -> str | None:
    """The value `field` must equal under these terms, as `RequiresExactMatch` finds it."""
    for lhs, op, value in terms:
        if lhs == field and op == "=":
            return value
    return None


# --- label selectors (apimachinery pkg/labels) --------------------------------------------

_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_INT64 = re.compile(r"[+-]?[0-9]+")
_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")
_SYMBOL_TOKENS = frozenset({")", ",", "!", "==", "=", ">", "<", "!=", "("})
_KEYWORDS = frozenset({"in", "notin"})

# token kinds
_ID, _END, _ERR = "id", "end", "err"


def _label_key_ok(key: str) -> bool:
    parts = key.split("/")
    if len(parts) > 2:
        return False
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            return False
    name = parts[-1]
    return 0 < len(name) <= 63 and _LABEL_NAME.fullmatch(name) is not None


def _label_value_ok(value: str) -> bool:
    return value == "" or (len(value) <= 63 and _LABEL_NAME.fullmatch(value) is not None)


def _lex_labels(selector: str) -> list[tuple[str, str]]:
    """Tokens `(kind, literal)`; kind is `id`, `end`, `err` or the literal of a symbol/keyword."""
    tokens: list[tuple[str, str]] = []
    pos, n = 0, len(selector)
    while True:
        while pos < n and selector[pos] in _WHITESPACE:
            pos += 1
        if pos >= n:
            tokens.append((_END, ""))
            return tokens
        if selector[pos] in _SPECIAL:
            # longest run of special characters that still forms a known symbol
            buf, last = "", ""
            while pos < n and selector[pos] in _SPECIAL:
                buf += selector[pos]
                if buf in _SYMBOL_TOKENS:
                    last = buf
                    pos += 1
                elif last:
                    break
                else:
                    pos += 1
            tokens.append((last, last) if last else (_ERR, buf))
            if not last:
                return [*tokens, (_END, "")]
            continue
        start = pos
        while pos < n and selector[pos] not in _SPECIAL and selector[pos] not in _WHITESPACE:
            pos += 1
        word = selector[start:pos]
        tokens.append((word, word) if word in _KEYWORDS else (_ID, word))


class _LabelParser:
    """Recursive descent over the token list, mirroring `labels.Parser` (validation only)."""

    def __init__(self, selector: str) -> None:
        self.tokens = _lex_labels(selector)
        self.pos = 0

    def peek(self, values: bool = True) -> str:
        kind = self.tokens[self.pos][0]
        return _ID if values and kind in _KEYWORDS else kind

    def take(self, values: bool = True) -> tuple[str, str]:
        kind, lit = self.tokens[self.pos]
        self.pos += 1
        return (_ID if values and kind in _KEYWORDS else kind), lit

    def parse(self) -> None:
        while True:
            kind = self.peek()
            if kind == _END:
                return
            if kind not in (_ID, "!"):
                raise SelectorSyntaxError("expected !, identifier, or end of string")
            self.requirement()
            kind, _ = self.take()
            if kind == _END:
                return
            if kind != ",":
                raise SelectorSyntaxError("expected ',' or end of string")
            if self.peek() not in (_ID, "!"):
                raise SelectorSyntaxError("expected identifier after ','")

    def requirement(self) -> None:
        kind, key = self.take()
        negated = kind == "!"
        if negated:
            kind, key = self.take()
        if kind != _ID or not _label_key_ok(key):
            raise SelectorSyntaxError(f"invalid label key {key!r}")
        if self.peek() in (_END, ","):
            return  # exists / does not exist
        op, _ = self.take(values=False)
        if negated:
            # `!key` is complete on its own: whatever follows must be `,` or the end.
            raise SelectorSyntaxError("values after a does-not-exist requirement")
        if op in ("in", "notin"):
            values = self.value_set()
            if not values:
                raise SelectorSyntaxError("empty value set")
        elif op in ("=", "==", "!=", ">", "<"):
            values = self.exact_value()
            if op in (">", "<") and not all(fits_int64(v) for v in values):
                raise SelectorSyntaxError("gt/lt need an integer")
        else:
            raise SelectorSyntaxError(f"unknown operator {op!r}")
        if not all(_label_value_ok(v) for v in values):
            raise SelectorSyntaxError("invalid label value")

    def value_set(self) -> set[str]:
        if self.take()[0] != "(":
            raise SelectorSyntaxError("expected '('")
        kind = self.peek()
        if kind == ")":
            self.take()
            return {""}
        if kind not in (_ID, ","):
            raise SelectorSyntaxError("expected ',', ')' or identifier")
        values: set[str] = set()
        while True:
            kind, lit = self.take()
            if kind == _ID:
                values.add(lit)
                nxt = self.peek()
                if nxt == ",":
                    continue
                if nxt == ")":
                    break
                raise SelectorSyntaxError("expected ',' or ')'")
            if kind == ",":
                if not values:
                    values.add("")
                nxt = self.peek()
                if nxt == ")":
                    values.add("")
                    break
                if nxt == ",":
                    values.add("")
                continue
            raise SelectorSyntaxError("expected ',' or identifier")
        if self.take()[0] != ")":
            raise SelectorSyntaxError("expected ')'")
        return values

    def exact_value(self) -> set[str]:
        if self.peek() in (_END, ","):
            return {""}
        kind, lit = self.take()
        if kind != _ID:
            raise SelectorSyntaxError("expected identifier")
        return {lit}


def fits_int64(value: str) -> bool:
    return _INT64.fullmatch(value) is not None and -(2**63) <= int(value) < 2**63


def check_label_selector(selector: str) -> None:
    """Raise `SelectorSyntaxError` where `labels.Parse` would fail; return None otherwise."""
    _LabelParser(selector).parse()
