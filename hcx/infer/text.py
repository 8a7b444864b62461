"""Incremental detokenization of generated tokens, with stop strings.

Text grows by decoding a short window of the latest ids and keeping what the newest ones add
(as vLLM and TGI do), which holds for any tokenizer: byte-level BPE tokens that end inside a
UTF-8 character (a Hangul syllable is 3 bytes and often spans two tokens) decode to U+FFFD
until the character's last byte arrives, so the window waits for it; a Metaspace token's
leading space (``▁word``), which a decoder drops at the start of a decode, keeps its space
because the window starts one token earlier. The text equals decoding all ids at once.

Stop strings spanning token boundaries: after each token the decoded text is searched from
``len(stop) - 1`` characters before the new piece, so a stop string assembled from several
tokens is found when its last character arrives. The text is cut where the stop string
starts (the stop string itself is not returned, as in the OpenAI API); the token ids keep
every token up to the one that completed it. For streaming, :meth:`TextStream.release`
holds back any tail of the text that could still become a stop string, so no text is ever
sent that a later stop would have cut.
"""

from __future__ import annotations

from collections.abc import Sequence

from hcx.tokenizer import Tokenizer


class TextStream:
    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()):
        if any(not s for s in stop):
            raise ValueError("stop strings must not be empty")
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.text = ""
        self.stopped_by: str | None = None
        self._ids: list[int] = []
        self._window = 0
        self._read = 0
        self._released = 0
        self._longest_stop = max((len(s) for s in self.stop), default=0)

    def push(self, token_id: int) -> bool:
        """Add one generated token; True when it completes a stop string (text is cut there)."""
        searched_from = max(0, len(self.text) - self._longest_stop + 1)
        self._ids.append(token_id)
        self.text += self._new_text()
        hits = [(self.text.find(s, searched_from), s) for s in self.stop]
        hits = [(at, s) for at, s in hits if at >= 0]
        if not hits:
            return False
        at, self.stopped_by = min(hits)
        self.text = self.text[:at]
        return True

    def finish(self) -> None:
        """No more tokens: an incomplete trailing character becomes U+FFFD."""
        if self.stopped_by is None:
            self.text += self._new_text(final=True)

    def _new_text(self, final: bool = False) -> str:
        """What the ids not yet in :attr:`text` add: decoded after the window's context ids, and held
        back while they end inside a character."""
        window = self.tokenizer.decode(self._ids[self._window :])
        if not final and window.endswith("\ufffd"):
            return ""
        context = self.tokenizer.decode(self._ids[self._window : self._read])
        if len(window) <= len(context) and not final:
            return ""
        self._window, self._read = self._read, len(self._ids)
        return window[len(context) :]

    def _undecided_tail(self) -> int:
        for size in range(min(self._longest_stop - 1, len(self.text)), 0, -1):
            tail = self.text[-size:]
            if any(s.startswith(tail) for s in self.stop):
                return size
        return 0

    def release(self, final: bool = False) -> str:
        """Text not yet released that no later token can change."""
        end = len(self.text) if final else len(self.text) - self._undecided_tail()
        end = max(end, self._released)
        delta, self._released = self.text[self._released : end], end
        return delta
