"""Incremental detokenization of generated tokens, with stop strings.

Byte-level BPE tokens can end inside a UTF-8 character (a Hangul syllable is 3 bytes and
often spans two tokens), so bytes go through an incremental UTF-8 decoder that holds back
an incomplete character until its last byte arrives.

Stop strings spanning token boundaries: after each token the decoded text is searched from
``len(stop) - 1`` characters before the new piece, so a stop string assembled from several
tokens is found when its last character arrives. The text is cut where the stop string
starts (the stop string itself is not returned, as in the OpenAI API); the token ids keep
every token up to the one that completed it. For streaming, :meth:`TextStream.release`
holds back any tail of the text that could still become a stop string, so no text is ever
sent that a later stop would have cut.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from hcx.tokenizer import HcxTokenizer


class TextStream:
    def __init__(self, tokenizer: HcxTokenizer, stop: Sequence[str] = ()):
        if any(not s for s in stop):
            raise ValueError("stop strings must not be empty")
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.text = ""
        self.stopped_by: str | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._released = 0
        self._longest_stop = max((len(s) for s in self.stop), default=0)

    def push(self, token_id: int) -> bool:
        """Add one generated token; True when it completes a stop string (text is cut there)."""
        searched_from = max(0, len(self.text) - self._longest_stop + 1)
        self.text += self._decoder.decode(self.tokenizer.decode_bytes([token_id]))
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
            self.text += self._decoder.decode(b"", final=True)

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
