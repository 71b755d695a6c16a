//! AMF0 values (Adobe "Action Message Format -- AMF 0", December 2007), both directions.
//!
//! Sans-IO: [`encode`] appends a value's bytes to a `Vec<u8>`, [`decode`] reads one value from
//! the front of a byte slice and says how many bytes it used, [`decode_all`] reads a whole
//! message body (an RTMP command is a sequence of AMF0 values, RTMP spec 1.0 §7.1.1).
//!
//! The decoder reads untrusted bytes: it never panics, checks every length against the bytes
//! actually present before allocating, never reserves room for more values than the bytes left
//! can hold (a strict array's u32 count, AMF0 spec §2.12, reserves at most 1024 values and
//! grows as values decode; object and ECMA array members, §2.5 and §2.10, only grow), and
//! stops at [`MAX_DEPTH`] levels of nesting, so its recursion is at most that deep.
//!
//! Supported markers (AMF0 spec §2.1): number 0x00, boolean 0x01, string 0x02, object 0x03,
//! null 0x05, undefined 0x06, ECMA array 0x08, object end 0x09 (inside objects only), strict
//! array 0x0A, date 0x0B, long string 0x0C. Also read, mapped onto the nearest variant:
//! unsupported 0x0D (→ [`Amf0::Undefined`]), XML document 0x0F (→ [`Amf0::String`]) and typed
//! object 0x10 (→ [`Amf0::Object`], class name dropped). Refused with an error: movieclip 0x04
//! and recordset 0x0E (reserved), reference 0x07 (no reference table is kept) and the AMF3
//! switch 0x11 (AMF3 is not supported).

use thiserror::Error;

/// One AMF0 value. Objects and ECMA arrays keep their members in wire order.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0 {
    /// Marker 0x00: an IEEE-754 double.
    Number(f64),
    /// Marker 0x01.
    Boolean(bool),
    /// Marker 0x02 (u16 length) or 0x0C long string (u32 length) when decoded; encoding picks
    /// the short form up to 65535 bytes.
    String(String),
    /// Marker 0x03: anonymous object, members in order.
    Object(Vec<(String, Amf0)>),
    /// Marker 0x05.
    Null,
    /// Marker 0x06.
    Undefined,
    /// Marker 0x08: ECMA array (associative), members in order.
    EcmaArray(Vec<(String, Amf0)>),
    /// Marker 0x0A: strict array.
    StrictArray(Vec<Amf0>),
    /// Marker 0x0B: ms since the Unix epoch and a time zone (ignored by players).
    Date(f64, i16),
}

/// Deepest nesting of objects, ECMA arrays, strict arrays and typed objects the decoder
/// accepts, levels (a top-level object is depth 1). Deeper input is [`Amf0Error::TooDeep`].
pub const MAX_DEPTH: usize = 32;

/// Type markers, AMF0 spec §2.1.
pub mod marker {
    /// §2.2 number (f64, big endian).
    pub const NUMBER: u8 = 0x00;
    /// §2.3 boolean (one byte, non-zero is true).
    pub const BOOLEAN: u8 = 0x01;
    /// §2.4 string (u16 length + UTF-8).
    pub const STRING: u8 = 0x02;
    /// §2.5 anonymous object.
    pub const OBJECT: u8 = 0x03;
    /// §2.6 movieclip (reserved, not supported).
    pub const MOVIECLIP: u8 = 0x04;
    /// §2.7 null.
    pub const NULL: u8 = 0x05;
    /// §2.8 undefined.
    pub const UNDEFINED: u8 = 0x06;
    /// §2.9 reference (u16 index).
    pub const REFERENCE: u8 = 0x07;
    /// §2.10 ECMA array (u32 count + members + end marker).
    pub const ECMA_ARRAY: u8 = 0x08;
    /// §2.11 object end (after an empty key).
    pub const OBJECT_END: u8 = 0x09;
    /// §2.12 strict array (u32 count + values).
    pub const STRICT_ARRAY: u8 = 0x0A;
    /// §2.13 date (f64 ms + s16 time zone).
    pub const DATE: u8 = 0x0B;
    /// §2.14 long string (u32 length + UTF-8).
    pub const LONG_STRING: u8 = 0x0C;
    /// §2.15 unsupported.
    pub const UNSUPPORTED: u8 = 0x0D;
    /// §2.16 recordset (reserved).
    pub const RECORDSET: u8 = 0x0E;
    /// §2.17 XML document (u32 length + UTF-8).
    pub const XML_DOCUMENT: u8 = 0x0F;
    /// §2.18 typed object (class name + object).
    pub const TYPED_OBJECT: u8 = 0x10;
    /// §3.1 switch to AMF3.
    pub const AVMPLUS: u8 = 0x11;
}

/// Why AMF0 bytes could not be decoded. Byte offsets count from the start of the slice given
/// to [`decode`] / [`decode_all`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Amf0Error {
    /// The input ended inside a value.
    #[error("AMF0: truncated at byte {at}: {what} needs {need} bytes, {have} left")]
    Truncated {
        /// Offset where the missing field starts.
        at: usize,
        /// What was being read.
        what: &'static str,
        /// Bytes the field needs.
        need: usize,
        /// Bytes that were left.
        have: usize,
    },
    /// A marker byte that is not an AMF0 type.
    #[error("AMF0: unknown marker 0x{marker:02x} at byte {at}")]
    UnknownMarker {
        /// The marker byte.
        marker: u8,
        /// Its offset.
        at: usize,
    },
    /// A marker AMF0 defines but this decoder refuses (movieclip, recordset, reference).
    #[error("AMF0: marker 0x{marker:02x} ({name}) at byte {at} is not supported")]
    Unsupported {
        /// The marker byte.
        marker: u8,
        /// Its name in the spec.
        name: &'static str,
        /// Its offset.
        at: usize,
    },
    /// The AMF3 switch marker 0x11 (AMF0 spec §3.1).
    #[error("AMF0: AMF3 switch marker 0x11 at byte {at}; AMF3 is not supported")]
    Amf3 {
        /// Its offset.
        at: usize,
    },
    /// An object-end marker 0x09 where a value was expected.
    #[error("AMF0: object end marker 0x09 at byte {at} outside an object")]
    UnexpectedObjectEnd {
        /// Its offset.
        at: usize,
    },
    /// Objects / arrays nested deeper than [`MAX_DEPTH`].
    #[error("AMF0: nesting deeper than {MAX_DEPTH} levels at byte {at}")]
    TooDeep {
        /// Offset of the value that would be one level too deep.
        at: usize,
    },
    /// A strict array whose count cannot fit in the remaining bytes (each value is at least
    /// one byte).
    #[error(
        "AMF0: strict array at byte {at} announces {count} values but only {left} bytes are left"
    )]
    ArrayTooLong {
        /// Offset of the array marker.
        at: usize,
        /// The announced count.
        count: u32,
        /// Bytes after the count.
        left: usize,
    },
}

impl Amf0 {
    /// The string, for [`Amf0::String`]; `None` otherwise.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, for [`Amf0::Number`] (and the ms of a [`Amf0::Date`]); `None` otherwise.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Amf0::Number(n) | Amf0::Date(n, _) => Some(*n),
            _ => None,
        }
    }

    /// The boolean, for [`Amf0::Boolean`]; `None` otherwise.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Amf0::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The members of an [`Amf0::Object`] or [`Amf0::EcmaArray`]; `None` otherwise.
    pub fn members(&self) -> Option<&[(String, Amf0)]> {
        match self {
            Amf0::Object(m) | Amf0::EcmaArray(m) => Some(m),
            _ => None,
        }
    }

    /// The first member named `key` of an object or ECMA array; `None` when absent or when
    /// `self` is neither.
    pub fn get(&self, key: &str) -> Option<&Amf0> {
        self.members()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Builds an [`Amf0::Object`] from `(key, value)` pairs, in order.
    pub fn object<K: Into<String>>(members: impl IntoIterator<Item = (K, Amf0)>) -> Amf0 {
        Amf0::Object(members.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Shorthand for `Amf0::String(s.into())`.
    pub fn string(s: impl Into<String>) -> Amf0 {
        Amf0::String(s.into())
    }
}

/// Appends the AMF0 encoding of `v` to `out` (AMF0 spec §2).
///
/// Strings up to 65535 bytes use the 0x02 form, longer ones 0x0C. Object / ECMA array keys
/// are limited to 65535 bytes by the format; a longer key is cut at the last UTF-8 character
/// boundary that fits. ECMA arrays carry their member count and an end marker.
pub fn encode(v: &Amf0, out: &mut Vec<u8>) {
    match v {
        Amf0::Number(n) => {
            out.push(marker::NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf0::Boolean(b) => {
            out.push(marker::BOOLEAN);
            out.push(u8::from(*b));
        }
        Amf0::String(s) => {
            if s.len() <= u16::MAX as usize {
                out.push(marker::STRING);
                out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            } else {
                out.push(marker::LONG_STRING);
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            }
            out.extend_from_slice(s.as_bytes());
        }
        Amf0::Object(members) => {
            out.push(marker::OBJECT);
            encode_members(members, out);
        }
        Amf0::Null => out.push(marker::NULL),
        Amf0::Undefined => out.push(marker::UNDEFINED),
        Amf0::EcmaArray(members) => {
            out.push(marker::ECMA_ARRAY);
            out.extend_from_slice(&(members.len() as u32).to_be_bytes());
            encode_members(members, out);
        }
        Amf0::StrictArray(values) => {
            out.push(marker::STRICT_ARRAY);
            out.extend_from_slice(&(values.len() as u32).to_be_bytes());
            for v in values {
                encode(v, out);
            }
        }
        Amf0::Date(ms, tz) => {
            out.push(marker::DATE);
            out.extend_from_slice(&ms.to_be_bytes());
            out.extend_from_slice(&tz.to_be_bytes());
        }
    }
}

/// Appends the encodings of `values`, one after another (an RTMP command / data body).
pub fn encode_all(values: &[Amf0], out: &mut Vec<u8>) {
    for v in values {
        encode(v, out);
    }
}

fn encode_members(members: &[(String, Amf0)], out: &mut Vec<u8>) {
    for (k, v) in members {
        let mut n = k.len().min(u16::MAX as usize);
        while !k.is_char_boundary(n) {
            n -= 1;
        }
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&k.as_bytes()[..n]);
        encode(v, out);
    }
    out.extend_from_slice(&[0, 0, marker::OBJECT_END]);
}

/// Decodes one value from the front of `buf`: returns it and the number of bytes it took.
/// Trailing bytes are left alone. Strings that are not valid UTF-8 are decoded lossily
/// (U+FFFD), since encoders put Latin-1 into metadata titles.
pub fn decode(buf: &[u8]) -> Result<(Amf0, usize), Amf0Error> {
    let mut r = Reader { buf, pos: 0 };
    let v = r.value(0)?;
    Ok((v, r.pos))
}

/// Decodes every value in `buf` until it is used up (an RTMP command or data message body).
/// An empty slice gives an empty list.
pub fn decode_all(buf: &[u8]) -> Result<Vec<Amf0>, Amf0Error> {
    let mut r = Reader { buf, pos: 0 };
    let mut out = Vec::new();
    while r.pos < buf.len() {
        out.push(r.value(0)?);
    }
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Amf0Error> {
        if self.left() < n {
            return Err(Amf0Error::Truncated {
                at: self.pos,
                what,
                need: n,
                have: self.left(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Amf0Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Amf0Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Amf0Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self, what: &'static str) -> Result<f64, Amf0Error> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    /// Reads `len` bytes of UTF-8 (length already read); checked against what is present.
    fn utf8(&mut self, len: usize, what: &'static str) -> Result<String, Amf0Error> {
        let b = self.take(len, what)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Amf0, Amf0Error> {
        let at = self.pos;
        let m = self.u8("a type marker")?;
        Ok(match m {
            marker::NUMBER => Amf0::Number(self.f64("a number")?),
            marker::BOOLEAN => Amf0::Boolean(self.u8("a boolean")? != 0),
            marker::STRING => {
                let n = self.u16("a string length")? as usize;
                Amf0::String(self.utf8(n, "a string")?)
            }
            marker::LONG_STRING | marker::XML_DOCUMENT => {
                let n = self.u32("a long string length")? as usize;
                Amf0::String(self.utf8(n, "a long string")?)
            }
            marker::OBJECT => {
                self.check_depth(depth, at)?;
                Amf0::Object(self.members(depth, false)?)
            }
            marker::TYPED_OBJECT => {
                self.check_depth(depth, at)?;
                let n = self.u16("a class name length")? as usize;
                self.take(n, "a class name")?;
                Amf0::Object(self.members(depth, false)?)
            }
            marker::NULL => Amf0::Null,
            marker::UNDEFINED | marker::UNSUPPORTED => Amf0::Undefined,
            marker::ECMA_ARRAY => {
                self.check_depth(depth, at)?;
                // The count is advisory (AMF0 spec §2.10); members run to the end marker.
                self.u32("an ECMA array count")?;
                Amf0::EcmaArray(self.members(depth, true)?)
            }
            marker::STRICT_ARRAY => {
                self.check_depth(depth, at)?;
                let count = self.u32("a strict array count")?;
                if count as usize > self.left() {
                    return Err(Amf0Error::ArrayTooLong {
                        at,
                        count,
                        left: self.left(),
                    });
                }
                // The count is the peer's word: reserve only what the bytes present can
                // back, at most RESERVE_MAX, and let the vector grow as values decode.
                let mut v = Vec::with_capacity(initial_capacity(count, self.left()));
                for _ in 0..count {
                    v.push(self.value(depth + 1)?);
                }
                Amf0::StrictArray(v)
            }
            marker::DATE => {
                let ms = self.f64("a date")?;
                let tz = self.u16("a date time zone")? as i16;
                Amf0::Date(ms, tz)
            }
            marker::OBJECT_END => return Err(Amf0Error::UnexpectedObjectEnd { at }),
            marker::MOVIECLIP => return Err(unsupported(m, "movieclip", at)),
            marker::RECORDSET => return Err(unsupported(m, "recordset", at)),
            marker::REFERENCE => return Err(unsupported(m, "reference", at)),
            marker::AVMPLUS => return Err(Amf0Error::Amf3 { at }),
            _ => return Err(Amf0Error::UnknownMarker { marker: m, at }),
        })
    }

    fn check_depth(&self, depth: usize, at: usize) -> Result<(), Amf0Error> {
        if depth >= MAX_DEPTH {
            Err(Amf0Error::TooDeep { at })
        } else {
            Ok(())
        }
    }

    /// Object / ECMA array members up to and including `00 00 09`. With `lenient_end`, input
    /// ending exactly where a key would start also ends the members (some encoders omit the
    /// end marker of an ECMA array at the end of onMetaData).
    fn members(
        &mut self,
        depth: usize,
        lenient_end: bool,
    ) -> Result<Vec<(String, Amf0)>, Amf0Error> {
        let mut members = Vec::new();
        loop {
            if lenient_end && self.left() == 0 {
                return Ok(members);
            }
            let n = self.u16("a member key length")? as usize;
            if n == 0 && self.buf.get(self.pos) == Some(&marker::OBJECT_END) {
                self.pos += 1;
                return Ok(members);
            }
            let key = self.utf8(n, "a member key")?;
            let v = self.value(depth + 1)?;
            members.push((key, v));
        }
    }
}

/// Most values a strict array reserves room for before any is decoded.
const RESERVE_MAX: usize = 1024;
/// Fewest bytes one AMF0 value takes (a marker alone: null, undefined; AMF0 spec §2.7, §2.8).
const MIN_VALUE_LEN: usize = 1;

/// Values to reserve for a strict array that announces `count` values with `left` bytes
/// after its count field (AMF0 spec §2.12): never more than those bytes can hold, nor
/// more than [`RESERVE_MAX`].
fn initial_capacity(count: u32, left: usize) -> usize {
    usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(left / MIN_VALUE_LEN)
        .min(RESERVE_MAX)
}

fn unsupported(marker: u8, name: &'static str, at: usize) -> Amf0Error {
    Amf0Error::Unsupported { marker, name, at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: &Amf0) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out);
        out
    }

    #[test]
    fn golden_scalars() {
        assert_eq!(
            enc(&Amf0::Number(1.0)),
            [0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(enc(&Amf0::Boolean(true)), [0x01, 0x01]);
        assert_eq!(enc(&Amf0::string("connect")), b"\x02\x00\x07connect");
        assert_eq!(enc(&Amf0::Null), [0x05]);
        assert_eq!(enc(&Amf0::Undefined), [0x06]);
        assert_eq!(
            enc(&Amf0::Date(0.0, -60)),
            [0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xc4]
        );
    }

    #[test]
    fn golden_object_and_arrays() {
        let o = Amf0::object([("app", Amf0::string("live"))]);
        assert_eq!(enc(&o), b"\x03\x00\x03app\x02\x00\x04live\x00\x00\x09");
        let e = Amf0::EcmaArray(vec![("a".into(), Amf0::Boolean(false))]);
        assert_eq!(
            enc(&e),
            b"\x08\x00\x00\x00\x01\x00\x01a\x01\x00\x00\x00\x09"
        );
        let s = Amf0::StrictArray(vec![Amf0::Null, Amf0::Undefined]);
        assert_eq!(enc(&s), b"\x0a\x00\x00\x00\x02\x05\x06");
        assert_eq!(decode(&enc(&o)).unwrap(), (o.clone(), 16));
        assert_eq!(o.get("app").and_then(Amf0::as_str), Some("live"));
        assert_eq!(o.get("nope"), None);
        assert_eq!(Amf0::Null.get("app"), None);
    }

    #[test]
    fn long_string_both_ways() {
        let s = "x".repeat(70_000);
        let b = enc(&Amf0::string(s.clone()));
        assert_eq!(b[0], marker::LONG_STRING);
        assert_eq!(&b[1..5], &70_000u32.to_be_bytes());
        assert_eq!(decode(&b).unwrap().0, Amf0::String(s));
        // A short string in long form decodes too.
        assert_eq!(
            decode(b"\x0c\x00\x00\x00\x02hi").unwrap(),
            (Amf0::string("hi"), 7)
        );
    }

    #[test]
    fn ecma_array_count_is_ignored() {
        // Count says 5, there is one member and the end marker.
        let b = b"\x08\x00\x00\x00\x05\x00\x01a\x05\x00\x00\x09";
        let (v, n) = decode(b).unwrap();
        assert_eq!(n, b.len());
        assert_eq!(v, Amf0::EcmaArray(vec![("a".into(), Amf0::Null)]));
        // Missing end marker at the very end of the input is tolerated for ECMA arrays only.
        let b = b"\x08\x00\x00\x00\x01\x00\x01a\x05";
        assert_eq!(
            decode(b).unwrap().0,
            Amf0::EcmaArray(vec![("a".into(), Amf0::Null)])
        );
        assert!(decode(b"\x03\x00\x01a\x05").is_err());
    }

    #[test]
    fn errors_are_descriptive() {
        let e = decode(b"\x05\x1f").map(|_| ());
        assert!(e.is_ok());
        let e = decode_all(b"\x05\x05\x1f").unwrap_err();
        assert_eq!(e.to_string(), "AMF0: unknown marker 0x1f at byte 2");
        let e = decode(b"\x11\x04").unwrap_err();
        assert_eq!(e, Amf0Error::Amf3 { at: 0 });
        let e = decode(b"\x02\x00\x09abc").unwrap_err();
        assert!(
            matches!(
                e,
                Amf0Error::Truncated {
                    at: 3,
                    need: 9,
                    have: 3,
                    ..
                }
            ),
            "{e}"
        );
        let e = decode(b"\x0a\xff\xff\xff\xff\x05").unwrap_err();
        assert!(matches!(
            e,
            Amf0Error::ArrayTooLong {
                count: u32::MAX,
                left: 1,
                ..
            }
        ));
        assert!(matches!(
            decode(b"\x07\x00\x01"),
            Err(Amf0Error::Unsupported { .. })
        ));
        assert!(matches!(
            decode(b"\x09"),
            Err(Amf0Error::UnexpectedObjectEnd { at: 0 })
        ));
        assert!(decode(b"").is_err());
        assert_eq!(decode_all(b"").unwrap(), vec![]);
    }

    #[test]
    fn depth_limit() {
        let mut v = Amf0::Null;
        for _ in 0..MAX_DEPTH {
            v = Amf0::StrictArray(vec![v]);
        }
        let b = enc(&v);
        assert_eq!(decode(&b).unwrap().0, v);
        let deeper = enc(&Amf0::StrictArray(vec![v]));
        assert!(matches!(decode(&deeper), Err(Amf0Error::TooDeep { .. })));
        // A hostile run of object markers stops at the limit instead of overflowing the stack.
        let mut hostile = Vec::new();
        for _ in 0..100_000 {
            hostile.extend_from_slice(b"\x03\x00\x01k");
        }
        assert!(matches!(decode(&hostile), Err(Amf0Error::TooDeep { .. })));
    }

    #[test]
    fn strict_array_count_reserves_nothing_it_cannot_back() {
        // Count 0xFFFFFFFF, then 5 bytes: refused at once, before any value is read.
        let e = decode(b"\x0a\xff\xff\xff\xff\x05\x05\x05\x05\x05").unwrap_err();
        assert_eq!(
            e,
            Amf0Error::ArrayTooLong {
                at: 0,
                count: u32::MAX,
                left: 5
            }
        );
        assert_eq!(initial_capacity(u32::MAX, 5), 5);
        assert_eq!(initial_capacity(3, 100), 3);
        assert_eq!(initial_capacity(1_000_000, 1_000_000), RESERVE_MAX);
        // A count the bytes can back but the values then break: an error, not a panic.
        let mut b = b"\x0a\x00\x01\x00\x00".to_vec();
        b.extend(std::iter::repeat_n(0x1fu8, 0x1_0000));
        assert!(matches!(
            decode(&b),
            Err(Amf0Error::UnknownMarker { at: 5, .. })
        ));
        // A large honest array still decodes, growing past the initial reservation.
        let mut b = b"\x0a\x00\x01\x00\x00".to_vec();
        b.extend(std::iter::repeat_n(marker::NULL, 0x1_0000));
        match decode(&b).unwrap() {
            (Amf0::StrictArray(v), n) => assert_eq!((v.len(), n), (0x1_0000, b.len())),
            other => panic!("strict array expected, got {other:?}"),
        }
    }

    #[test]
    fn hundred_levels_of_any_container_are_too_deep() {
        // Objects, ECMA arrays, strict arrays and typed objects nested 100 deep, each kind
        // alone and mixed: an error at the 33rd level, found without recursing further.
        let levels: [&[u8]; 4] = [
            b"\x03\x00\x01k",
            b"\x08\x00\x00\x00\x01\x00\x01k",
            b"\x0a\x00\x00\x00\x01",
            b"\x10\x00\x01C\x00\x01k",
        ];
        for mix in 0..5 {
            let mut b = Vec::new();
            let mut starts = Vec::new();
            for i in 0..100 {
                starts.push(b.len());
                b.extend_from_slice(levels[if mix == 4 { i % 4 } else { mix }]);
            }
            b.push(marker::NULL);
            let e = decode(&b).unwrap_err();
            assert_eq!(
                e,
                Amf0Error::TooDeep {
                    at: starts[MAX_DEPTH]
                },
                "mix {mix}"
            );
            assert_eq!(decode_all(&b).unwrap_err(), e);
        }
    }

    #[test]
    fn typed_object_xml_unsupported() {
        let b = b"\x10\x00\x02Cl\x00\x01a\x05\x00\x00\x09";
        assert_eq!(
            decode(b).unwrap().0,
            Amf0::Object(vec![("a".into(), Amf0::Null)])
        );
        assert_eq!(
            decode(b"\x0f\x00\x00\x00\x03<a>").unwrap().0,
            Amf0::string("<a>")
        );
        assert_eq!(decode(b"\x0d").unwrap().0, Amf0::Undefined);
    }

    #[test]
    fn decode_all_command() {
        let mut b = Vec::new();
        encode_all(
            &[
                Amf0::string("connect"),
                Amf0::Number(1.0),
                Amf0::object([("app", Amf0::string("live"))]),
            ],
            &mut b,
        );
        let v = decode_all(&b).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].as_str(), Some("connect"));
        assert_eq!(v[1].as_f64(), Some(1.0));
    }

    fn key() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_é]{0,12}"
    }

    fn arb_amf0() -> impl Strategy<Value = Amf0> {
        let leaf = prop_oneof![
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(Amf0::Number),
            any::<bool>().prop_map(Amf0::Boolean),
            ".{0,20}".prop_map(Amf0::String),
            Just(Amf0::Null),
            Just(Amf0::Undefined),
            (-1e15f64..1e15, any::<i16>()).prop_map(|(d, z)| Amf0::Date(d, z)),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec((key(), inner.clone()), 0..6)
                    // An empty key followed by the object end marker would end the object.
                    .prop_map(Amf0::Object),
                prop::collection::vec((key(), inner.clone()), 0..6).prop_map(Amf0::EcmaArray),
                prop::collection::vec(inner, 0..6).prop_map(Amf0::StrictArray),
            ]
        })
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let _ = decode_all(&bytes);
        }

        #[test]
        fn decode_never_panics_on_near_valid(v in arb_amf0(), cut in any::<prop::sample::Index>(),
                                            flip in any::<prop::sample::Index>(), x in any::<u8>()) {
            let mut b = enc(&v);
            let i = flip.index(b.len());
            b[i] ^= x;
            let c = cut.index(b.len() + 1);
            let _ = decode(&b[..c]);
        }

        #[test]
        fn round_trip(v in arb_amf0()) {
            let b = enc(&v);
            let (d, n) = decode(&b).unwrap();
            prop_assert_eq!(n, b.len());
            prop_assert_eq!(d, v);
        }
    }
}
