//! Reading bincode 1 (default options), the encoding v1 used for WAL payloads and segment
//! objects: fixed-width little-endian integers, one-byte bools and option tags, u64 lengths.
//! Byte strings come out as slices of the input (no copies).

use bytes::Bytes;

/// Where and why a payload did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {at}: {what}")]
pub struct DecodeError {
    pub at: usize,
    pub what: String,
}

pub struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn fail<T>(&self, what: impl Into<String>) -> Result<T, DecodeError> {
        Err(DecodeError { at: self.pos, what: what.into() })
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        match self.buf.get(self.pos..self.pos + N) {
            Some(b) => {
                self.pos += N;
                Ok(b.try_into().expect("length checked"))
            }
            None => self.fail(format!("needs {N} more bytes, {} left", self.remaining())),
        }
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => self.fail(format!("bool byte {b}")),
        }
    }

    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_le_bytes(self.take()?))
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.take()?))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    /// A length or element count (u64), bounded by what is left so a damaged one cannot make
    /// a caller reserve memory for it.
    pub fn len(&mut self) -> Result<usize, DecodeError> {
        let n = u64::from_le_bytes(self.take()?);
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => self.fail(format!("length {n} runs past the end ({} bytes left)", self.remaining())),
        }
    }

    pub fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.len()?;
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    pub fn opt_bytes(&mut self) -> Result<Option<Bytes>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.bytes().map(Some),
            t => self.fail(format!("option tag {t}")),
        }
    }

    pub fn string(&mut self) -> Result<String, DecodeError> {
        let at = self.pos;
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError { at, what: "string is not UTF-8".into() })
    }
}
