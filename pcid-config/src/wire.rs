//! A bincode-1-compatible encoder/decoder for exactly the shapes the pcid channel uses.
//!
//! Owns: the byte rules of bincode 1.x's default configuration as pcid uses it — little-endian
//! fixed-width integers, `u32` enum variant indices, `u64` lengths before `Vec`s, `Option` as a
//! `0`/`1` byte, `bool` as one byte, `usize` as `u64`, fixed arrays and tuples without a length,
//! struct fields in declaration order — and the 8-byte length prefix pcid puts before every
//! reply.
//!
//! Must not: panic or over-allocate on bytes from the channel. Every read is bounds-checked;
//! a `Vec` length is never trusted beyond the bytes that remain.

use thiserror::Error;

/// Largest reply frame accepted. pcid's largest reply (vendor capabilities) is bounded by the
/// 4 KiB extended config space; anything bigger is corruption.
pub const MAX_FRAME_LEN: u64 = 64 * 1024;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended `needed` bytes early at offset `at`.
    #[error("input ends at {at}: {needed} more bytes needed")]
    UnexpectedEnd {
        /// Offset of the failed read.
        at: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// An enum index that the type does not have.
    #[error("{ty}: unknown variant index {index}")]
    BadVariant {
        /// The enum being decoded.
        ty: &'static str,
        /// The index read.
        index: u32,
    },
    /// A `bool` or `Option` tag byte other than 0 or 1.
    #[error("{what}: invalid tag byte {byte:#x}")]
    BadTag {
        /// `bool` or `Option`.
        what: &'static str,
        /// The byte read.
        byte: u8,
    },
    /// A `usize` that does not fit this machine.
    #[error("usize value {0:#x} does not fit")]
    UsizeOverflow(u64),
    /// Bytes left after a complete value.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    /// A reply frame longer than [`MAX_FRAME_LEN`].
    #[error("frame length {0} exceeds the limit")]
    FrameTooLong(u64),
}

/// Appends encoded values to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// An enum variant index.
    pub fn variant(&mut self, index: u32) {
        self.bytes(&index.to_le_bytes());
    }
    /// A sequence length.
    pub fn len(&mut self, len: usize) {
        // usize is at most 64 bits on every target gpud supports.
        self.bytes(&(len as u64).to_le_bytes());
    }
}

/// Reads encoded values from a byte slice, never past its end.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::UnexpectedEnd {
                at: self.pos,
                needed: n - self.remaining().min(n),
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    /// An enum variant index.
    pub fn variant(&mut self) -> Result<u32, DecodeError> {
        u32::decode(self)
    }
    /// A sequence length, capped by what a sequence of `min_elem`-byte elements could fill.
    pub fn len(&mut self, min_elem: usize) -> Result<usize, DecodeError> {
        let raw = u64::decode(self)?;
        let len = usize::try_from(raw).map_err(|_| DecodeError::UsizeOverflow(raw))?;
        let possible = self.remaining() / min_elem.max(1);
        if len > possible {
            return Err(DecodeError::UnexpectedEnd {
                at: self.pos,
                needed: (len - possible).saturating_mul(min_elem.max(1)),
            });
        }
        Ok(len)
    }
    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

/// A value with a bincode-1 encoding.
pub trait Wire: Sized {
    /// Smallest encoded size; bounds `Vec` preallocation when decoding.
    const MIN_LEN: usize;
    /// Appends the encoding of `self`.
    fn encode(&self, w: &mut Writer);
    /// Reads one value.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

macro_rules! wire_int {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            const MIN_LEN: usize = core::mem::size_of::<$t>();
            fn encode(&self, w: &mut Writer) {
                w.bytes(&self.to_le_bytes());
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(<$t>::from_le_bytes(r.array()?))
            }
        }
    )*};
}
wire_int!(u8, u16, u32, u64);

impl Wire for usize {
    const MIN_LEN: usize = 8;
    fn encode(&self, w: &mut Writer) {
        (*self as u64).encode(w);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let raw = u64::decode(r)?;
        usize::try_from(raw).map_err(|_| DecodeError::UsizeOverflow(raw))
    }
}

impl Wire for bool {
    const MIN_LEN: usize = 1;
    fn encode(&self, w: &mut Writer) {
        w.bytes(&[u8::from(*self)]);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match u8::decode(r)? {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(DecodeError::BadTag { what: "bool", byte }),
        }
    }
}

impl<T: Wire> Wire for Option<T> {
    const MIN_LEN: usize = 1;
    fn encode(&self, w: &mut Writer) {
        match self {
            None => w.bytes(&[0]),
            Some(v) => {
                w.bytes(&[1]);
                v.encode(w);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match u8::decode(r)? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(r)?)),
            byte => Err(DecodeError::BadTag {
                what: "Option",
                byte,
            }),
        }
    }
}

impl<T: Wire> Wire for Vec<T> {
    const MIN_LEN: usize = 8;
    fn encode(&self, w: &mut Writer) {
        w.len(self.len());
        for v in self {
            v.encode(w);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = r.len(T::MIN_LEN)?;
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            out.push(T::decode(r)?);
        }
        Ok(out)
    }
}

impl<T: Wire + Copy + Default, const N: usize> Wire for [T; N] {
    const MIN_LEN: usize = T::MIN_LEN * N;
    fn encode(&self, w: &mut Writer) {
        for v in self {
            v.encode(w);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut out = [T::default(); N];
        for slot in &mut out {
            *slot = T::decode(r)?;
        }
        Ok(out)
    }
}

impl<A: Wire, B: Wire, C: Wire> Wire for (A, B, C) {
    const MIN_LEN: usize = A::MIN_LEN + B::MIN_LEN + C::MIN_LEN;
    fn encode(&self, w: &mut Writer) {
        self.0.encode(w);
        self.1.encode(w);
        self.2.encode(w);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok((A::decode(r)?, B::decode(r)?, C::decode(r)?))
    }
}

/// Encodes one value (a request is sent as exactly these bytes, in one `write`).
pub fn to_bytes<T: Wire>(value: &T) -> Vec<u8> {
    let mut w = Writer::new();
    value.encode(&mut w);
    w.into_bytes()
}

/// Decodes one value that must fill `bytes` exactly.
pub fn from_bytes<T: Wire>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = T::decode(&mut r)?;
    r.finish()?;
    Ok(v)
}

/// Encodes a reply as pcid sends it: 8-byte little-endian length, then the value.
pub fn to_frame<T: Wire>(value: &T) -> Vec<u8> {
    let body = to_bytes(value);
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads the length prefix of a reply frame.
pub fn frame_len(prefix: [u8; 8]) -> Result<usize, DecodeError> {
    let len = u64::from_le_bytes(prefix);
    if len > MAX_FRAME_LEN {
        return Err(DecodeError::FrameTooLong(len));
    }
    usize::try_from(len).map_err(|_| DecodeError::UsizeOverflow(len))
}

/// Decodes a whole reply frame (prefix + body, nothing after it).
pub fn from_frame<T: Wire>(frame: &[u8]) -> Result<T, DecodeError> {
    let mut r = Reader::new(frame);
    let len = frame_len(r.array()?)?;
    let body = r.take(len)?;
    r.finish()?;
    from_bytes(body)
}
