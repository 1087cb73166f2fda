"""A CSR matrix assembled a chunk of dense rows at a time, in bounded memory.

BioConvHash's database features are produced a chunk of images at a time and are too large to
hold dense (MNIST-size front end: 70,000 x 100,000 at ~25 % non-zero, 14 GB as CSR). Keeping
each chunk as its own small CSR array and stacking them at the end needs about twice the final
size in practice, even when every chunk is freed once copied: glibc's allocator serves requests
below its mmap threshold (raised up to 32 MiB as large blocks are freed) from the heap, and
memory freed there is rarely returned to the system. :class:`RowBuilder` instead copies every
chunk's non-zeros into blocks of ``block`` entries (64 MiB of values by default, so allocated
and released with mmap), and :meth:`RowBuilder.build` moves them into the final arrays one block
at a time, dropping each block once copied: peak resident memory is the final matrix plus one
block (the final arrays' pages are touched only as the blocks are released).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from hebbret.errors import InputError

BLOCK = 2**24  # non-zeros a block: 64 MiB of float32 values, 64 MiB of int32 column indices


class RowBuilder:
    """Accumulates dense float32 row chunks (r, d) into one (n, d) float32 CSR array.

    Example:
      >>> rows = RowBuilder(d)
      >>> for chunk in chunks: rows.append(chunk)
      >>> x = rows.build()  # == scipy.sparse.csr_array(np.concatenate(chunks))
    """

    def __init__(self, d: int, *, block: int | None = None):
        block = BLOCK if block is None else block
        if d < 1 or block < 1:
            raise InputError(f"need d >= 1 and block >= 1, got d = {d}, block = {block}")
        if d >= 2**31:
            raise InputError(f"d = {d} columns do not fit int32 column indices")
        self.d, self.block = int(d), int(block)
        self._blocks: list[tuple[np.ndarray, np.ndarray]] = []
        self._used = block  # entries used in the last block (full: the next append opens one)
        self._counts: list[np.ndarray] = []  # non-zeros per row, a chunk at a time

    @property
    def nnz(self) -> int:
        return sum(int(c.sum()) for c in self._counts)

    @property
    def rows(self) -> int:
        return sum(len(c) for c in self._counts)

    def append(self, chunk: np.ndarray) -> None:
        """Adds the non-zeros of a dense (r, d) chunk, in row-major order."""
        chunk = np.asarray(chunk)
        if chunk.ndim != 2 or chunk.shape[1] != self.d:
            raise InputError(f"expected row chunks of shape (r, {self.d}), got {chunk.shape}")
        rows, cols = np.nonzero(chunk)
        values = chunk[rows, cols].astype(np.float32, copy=False)
        self._counts.append(np.bincount(rows, minlength=chunk.shape[0]))
        del rows
        cols = cols.astype(np.int32)
        at = 0
        while at < len(values):
            if self._used == self.block:
                self._blocks.append(
                    (np.empty(self.block, np.float32), np.empty(self.block, np.int32))
                )
                self._used = 0
            data, index = self._blocks[-1]
            take = min(len(values) - at, self.block - self._used)
            data[self._used : self._used + take] = values[at : at + take]
            index[self._used : self._used + take] = cols[at : at + take]
            self._used += take
            at += take

    def build(self) -> scipy.sparse.csr_array:
        """The (n, d) float32 CSR array of every row appended; empties the builder. Column
        indices and row pointers are int32 below 2^31 non-zeros, else int64."""
        if not self._counts:
            raise InputError("no rows were appended")
        counts = np.concatenate(self._counts)
        nnz = int(counts.sum())
        index = np.int32 if nnz < 2**31 else np.int64  # one dtype: scipy converts mixed ones
        indptr = np.zeros(len(counts) + 1, index)
        np.cumsum(counts, out=indptr[1:])
        data, indices = np.empty(nnz, np.float32), np.empty(nnz, index)
        at = 0
        self._blocks.reverse()
        while self._blocks:
            block_data, block_index = self._blocks.pop()  # released once copied
            take = min(self.block, nnz - at)
            data[at : at + take], indices[at : at + take] = block_data[:take], block_index[:take]
            at += take
            del block_data, block_index
        self._counts, self._used = [], self.block
        return scipy.sparse.csr_array((data, indices, indptr), shape=(len(counts), self.d))
