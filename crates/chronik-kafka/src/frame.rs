//! Response frames as a list of byte ranges, so a Fetch response carries stored record
//! batches without copying them: the encoder writes the protocol fields into owned bytes and
//! the batches stay the views into the WAL they were read as, until `writev` sends them.
//!
//! kafka-protocol encodes a record field from one contiguous `Bytes`. A fetch of several
//! stored entries is several ranges, so the field is given a *placeholder* of the right length:
//! a slice of a process-wide, never-touched, read-only anonymous mapping (address space only,
//! no memory). When the encoder copies a placeholder slice into the buffer, [`GatherBuf`]
//! recognises it by address and splices in the real ranges instead.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::OnceLock;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// The placeholder region's size: no frame may reach 2 GiB (its length is an i32).
pub const PLACEHOLDER_BYTES: usize = 1 << 31;

/// A response frame: its ranges in order.
#[derive(Debug, Default)]
pub struct Frame {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl Frame {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.remaining += b.len();
            self.parts.push_back(b);
        }
    }
}

impl From<Bytes> for Frame {
    fn from(b: Bytes) -> Frame {
        let mut f = Frame::default();
        f.push(b);
        f
    }
}

impl Buf for Frame {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |b| &b[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of a frame");
        self.remaining -= cnt;
        while cnt > 0 {
            let front = self.parts.front_mut().expect("remaining covers cnt");
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(&self.parts) {
            *slot = IoSlice::new(part);
            n += 1;
        }
        n
    }
}

/// The placeholder region (created on first use).
fn placeholder_region() -> Option<&'static Bytes> {
    static REGION: OnceLock<Option<Bytes>> = OnceLock::new();
    REGION
        .get_or_init(|| {
            let map = memmap2::MmapOptions::new().len(PLACEHOLDER_BYTES).no_reserve_swap().map_anon().ok()?;
            Some(Bytes::from_owner(map.make_read_only().ok()?))
        })
        .as_ref()
}

/// Hands out placeholders for the record fields of one response and remembers what each
/// stands for.
#[derive(Default)]
pub struct Splices {
    next: usize,
    by_address: HashMap<usize, Vec<Bytes>>,
}

impl Splices {
    /// A field value standing for `chunks` (concatenated). Falls back to one copy when the
    /// placeholder region is unavailable or used up.
    pub fn stand_in(&mut self, chunks: Vec<Bytes>) -> Bytes {
        let len: usize = chunks.iter().map(Bytes::len).sum();
        match chunks.len() {
            0 => return Bytes::new(),
            1 => return chunks.into_iter().next().expect("one chunk"), // already contiguous
            _ => {}
        }
        let Some(region) = placeholder_region().filter(|_| self.next + len <= PLACEHOLDER_BYTES) else {
            let mut b = BytesMut::with_capacity(len);
            for c in chunks {
                b.extend_from_slice(&c);
            }
            return b.freeze();
        };
        let stand_in = region.slice(self.next..self.next + len);
        self.next += len;
        self.by_address.insert(stand_in.as_ptr() as usize, chunks);
        stand_in
    }

    /// A buffer to encode the response into.
    pub fn into_buf(self) -> GatherBuf {
        GatherBuf { done: Frame::default(), cur: BytesMut::new(), splices: self.by_address }
    }
}

/// An encoding buffer that splices placeholders (see [`Splices`]) and keeps single large
/// ranges by reference.
pub struct GatherBuf {
    done: Frame,
    cur: BytesMut,
    splices: HashMap<usize, Vec<Bytes>>,
}

impl GatherBuf {
    pub fn into_frame(mut self) -> Frame {
        let cur = std::mem::take(&mut self.cur).freeze();
        self.done.push(cur);
        self.done
    }

    /// The owned bytes written so far become a range of their own.
    fn seal(&mut self) {
        let cur = self.cur.split().freeze();
        self.done.push(cur);
    }
}

// SAFETY: every method delegates to the `BytesMut` being written (`cur`), which upholds the
// trait's contract; `put_slice` either delegates too or appends ranges after sealing `cur`.
#[allow(unsafe_code)]
unsafe impl BufMut for GatherBuf {
    fn remaining_mut(&self) -> usize {
        self.cur.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut()`, which is `cur`'s.
        unsafe { self.cur.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.cur.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if let Some(chunks) = self.splices.remove(&(src.as_ptr() as usize)) {
            self.seal();
            for c in chunks {
                self.done.push(c);
            }
            return;
        }
        self.cur.put_slice(src);
    }
}

impl ByteBufMut for GatherBuf {
    fn offset(&self) -> usize {
        self.done.remaining + self.cur.len()
    }

    /// Forward only (gaps are reserved ahead, never behind): response encoding reserves none.
    fn seek(&mut self, offset: usize) {
        let target = offset.checked_sub(self.done.remaining).expect("no seek into sealed ranges");
        self.cur.resize(target, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        let base = self.done.remaining;
        &mut self.cur[r.start - base..r.end - base]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_spliced_and_the_frame_reads_back_whole() {
        let mut splices = Splices::default();
        let a = splices.stand_in(vec![Bytes::from_static(b"alpha"), Bytes::from_static(b"-beta")]);
        let single = splices.stand_in(vec![Bytes::from_static(b"solo")]);
        let mut buf = splices.into_buf();
        buf.put_slice(b"[head]");
        buf.put_slice(&a);
        buf.put_u16(0x2021);
        buf.put_slice(&single);
        let mut frame = buf.into_frame();
        assert!(frame.parts.len() >= 3, "the spliced ranges stay separate: {:?}", frame.parts);
        let mut out = Vec::new();
        while frame.has_remaining() {
            let n = frame.chunk().len().min(3); // advance in odd steps across ranges
            out.extend_from_slice(&frame.chunk()[..n]);
            frame.advance(n);
        }
        assert_eq!(out, b"[head]alpha-beta !solo");
    }
}
