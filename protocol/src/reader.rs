//! A bounds-checked big-endian cursor over a byte slice: every read checks the remaining length
//! first, so no decoder can index past its input or allocate from an unchecked length.

use crate::error::WireError;

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, position: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.position
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// Takes `len` bytes, or fails naming `what` when fewer remain.
    pub(crate) fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if len > self.remaining() {
            return Err(WireError::bad_length(
                what,
                i64::try_from(len).unwrap_or(i64::MAX),
                self.remaining(),
            ));
        }
        let start = self.position;
        self.position += len;
        Ok(&self.bytes[start..self.position])
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let slice = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, WireError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// Reads a length field and then that many bytes; a negative length is an error.
    pub(crate) fn sized(&mut self, len: i64, what: &'static str) -> Result<&'a [u8], WireError> {
        let len_usize =
            usize::try_from(len).map_err(|_| WireError::bad_length(what, len, self.remaining()))?;
        self.take(len_usize, what)
    }

    pub(crate) fn utf8(&mut self, len: i64, what: &'static str) -> Result<&'a str, WireError> {
        let bytes = self.sized(len, what)?;
        std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8 { what })
    }
}
