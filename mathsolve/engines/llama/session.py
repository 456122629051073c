"""One problem on the llama.cpp engine: streaming generation and prefix reuse.

Prefix reuse: a session keeps the token ids of its whole context. After a round the
loop pushes the text to keep (the round, right-stripped, plus the tool output). The
session re-uses the tokens the model generated as long as their bytes are a prefix
of that text, and tokenizes only the remainder, checked to detokenize to exactly
those bytes. llama.cpp then evaluates just the new tokens. The TEXT the model sees
is byte-identical to what the reference pipelines fed (they re-tokenized whole
strings); only token boundaries at the seam may differ. When a remainder cannot
be tokenized verifiably on its own, the session tokenizes it plainly (the text may
then differ by a leading space on SentencePiece vocabularies) and counts it in
`stats.retokenized`. A protocol's markers (MathCoder's `<|execution|>`) in pushed
text are tokenized as the special tokens they are.
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING, Callable

from mathsolve.engines.base import Generation, Sampling, TokenStats, find_stop, held_back

if TYPE_CHECKING:
    from mathsolve.engines.llama.engine import LlamaEngine


class LlamaSession:
    def __init__(
        self,
        engine: LlamaEngine,
        prompt: str,
        *,
        special: bool,
        render_special: bool,
        literal: str | None = None,
        markers: tuple[str, ...] = (),
    ) -> None:
        self.engine = engine
        self.render_special = render_special
        self.markers = tuple(m.encode("utf-8") for m in markers)
        self.tokens = self._prompt_tokens(prompt, special, literal)
        self.stats = TokenStats(prompt=len(self.tokens))
        self._pending: list[int] = []

    def _prompt_tokens(self, prompt: str, special: bool, literal: str | None) -> list[int]:
        """Tokenize the prompt in one call, as the reference did, unless that would turn
        special-token text inside the user's `literal` (e.g. "<|im_end|>" in a question)
        into control tokens: then the literal part is tokenized as plain text."""
        tokenize = self.engine.tokenize
        data = prompt.encode("utf-8")
        lit = (literal or "").encode("utf-8")
        if not (special and lit and lit in data) or tokenize(lit, add_bos=False, special=True) == tokenize(
            lit, add_bos=False, special=False
        ):
            return tokenize(data, add_bos=True, special=special)
        at = data.index(lit)
        head = tokenize(data[:at], add_bos=True, special=True)
        body = tokenize(lit, add_bos=False, special=False)
        tail = tokenize(data[at + len(lit) :], add_bos=False, special=True)
        return head + body + tail

    # -- generation ----------------------------------------------------------------
    def generate(
        self,
        *,
        stops: tuple[str, ...],
        max_tokens: int,
        sampling: Sampling,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        engine = self.engine
        llm = engine.llm
        budget = engine.n_ctx - len(self.tokens)
        if budget <= 0:
            return Generation(text="", finish_reason="length")
        max_tokens = min(max_tokens, budget)
        llm.set_seed(sampling.seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, emitted, reason, stop = "", 0, "length", None
        pending: list[int] = []
        evaluated_before = engine.evaluated
        longest_stop = max((len(s) for s in stops), default=0)
        # Text can only be held back when its tail holds the first character of a stop
        # string; checking that first keeps held_back() off the per-token path in prose.
        stop_starts = "".join({s[0] for s in stops if s})
        generator = llm.generate(
            self.tokens,
            temp=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
            reset=True,
        )
        try:
            for token in generator:
                if engine.is_eog(token):
                    # An end-of-generation token that is also a stop string (harmony's
                    # <|call|> and <|return|>) ends the round as that stop, so the
                    # protocol learns which one it was.
                    piece = engine.piece(token, True).decode("utf-8", "replace")
                    if piece in stops:
                        reason, stop = "stop", piece
                        pending.append(token)
                    else:
                        reason = "eos"
                    break
                pending.append(token)
                # A stop string can only end in the new piece: search from just before it.
                search_from = max(0, len(text) - longest_stop + 1)
                text += decoder.decode(engine.piece(token, self.render_special))
                hit = find_stop(text, stops, search_from)
                if hit is not None:
                    text, reason, stop = text[: hit[0]], "stop", hit[1]
                    break
                if on_text is not None:
                    tail = text[len(text) - longest_stop + 1 :] if longest_stop > 1 else ""
                    hold = held_back(text, stops) if any(c in tail for c in stop_starts) else 0
                    safe_end = len(text) - hold
                    if safe_end > emitted:
                        on_text(text[emitted:safe_end])
                        emitted = safe_end
                if len(pending) >= max_tokens:
                    break
        finally:
            generator.close()
            self._pending = pending
            self.stats.generated += len(pending)
            # What llama.cpp ran: the context suffix not yet in its cache, plus
            # each generated token fed back.
            self.stats.evaluated += engine.evaluated - evaluated_before
        text += decoder.decode(b"", final=True) if reason != "stop" else ""
        if on_text is not None and len(text) > emitted:
            on_text(text[emitted:])
        return Generation(text=text, finish_reason=reason, stop=stop, n_tokens=len(pending))

    # -- appending text -------------------------------------------------------------
    def push(self, text: str) -> None:
        """Append `text` after the context: re-use generated tokens, tokenize the rest."""
        data = text.encode("utf-8")
        offset, reused = 0, 0
        for token in self._pending:
            piece = self.engine.piece(token, self.render_special)
            if not piece or not data.startswith(piece, offset):
                break
            offset += len(piece)
            reused += 1
        tail: list[int] = []
        for chunk, is_marker in self._split_markers(data[offset:]):
            if is_marker:
                tail += self.engine.tokenize(chunk, add_bos=False, special=True)
                continue
            tokens = self._tokenize_continuation(chunk)
            if tokens is None:  # no verifiable splice: tokenize the chunk plainly
                self.stats.retokenized += 1
                tokens = self.engine.tokenize(chunk, add_bos=False, special=False)
            tail += tokens
        self.tokens = self.tokens + self._pending[:reused] + tail
        self.stats.injected += len(tail)
        self._pending = []

    def _split_markers(self, data: bytes) -> list[tuple[bytes, bool]]:
        """Cut `data` around the protocol's markers: (chunk, is_marker) in order.

        The reference re-tokenized its whole transcript with special tokens parsed, so a
        marker written by the loop (`<|execution|>`) became the marker token; plain text
        around it is tokenized with special parsing off.
        """
        chunks: list[tuple[bytes, bool]] = []
        start = 0
        while self.markers:
            hits = [(data.find(m, start), m) for m in self.markers]
            hits = [(i, m) for i, m in hits if i != -1]
            if not hits:
                break
            i, marker = min(hits)
            if i > start:
                chunks.append((data[start:i], False))
            chunks.append((marker, True))
            start = i + len(marker)
        if start < len(data):
            chunks.append((data[start:], False))
        return chunks

    def _tokenize_continuation(self, data: bytes) -> list[int] | None:
        """Tokens that detokenize to exactly `data` when appended mid-text.

        SentencePiece vocabularies prepend a space to a string tokenized on its own;
        tokenizing behind a short anchor and dropping the anchor's tokens avoids it.
        """
        if not data:
            return []
        engine = self.engine
        tokens = engine.tokenize(data, add_bos=False, special=False)
        if engine.detokenize(tokens, False) == data:
            return tokens
        for anchor in (b"\n", b"a", b"."):
            tokens = engine.tokenize(anchor + data, add_bos=False, special=False)
            prefix = b""
            for j, token in enumerate(tokens):
                prefix += engine.piece(token, False)
                if prefix in (anchor, b" " + anchor):
                    rest = tokens[j + 1 :]
                    if engine.detokenize(rest, False) == data:
                        return rest
                    break
                if len(prefix) > len(anchor) + 1:
                    break
        return None

    def close(self) -> None:
        self._pending = []
