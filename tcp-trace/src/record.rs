//! Recording format (`tcp-trace record` / `tcp-trace replay`), version 1.
//!
//! ```text
//! magic     8 bytes  "TCPTRACE"
//! version   u32 LE   1
//! rec_size  u32 LE   size of one record (120 = RawEvent)
//! wall_ns   i64 LE   CLOCK_REALTIME - CLOCK_MONOTONIC at record time (ns)
//! meta_len  u32 LE   length of the metadata that follows
//! meta      JSON     {"kernel": "...", "hostname": "...", "args": [...]}
//! records   rec_size bytes each: a RawEvent exactly as the kernel wrote it, or a
//!           loss marker (kind 0xFF, `aux` = events lost at that point)
//! ```
//! Readers reject other magics and newer versions with a clear error, and accept
//! a larger `rec_size` from a newer writer (extra bytes ignored).
use std::io::{self, Read, Write};

use tcp_trace_common::{RAW_EVENT_SIZE, RawEvent};

use crate::decode::{raw_from_bytes, raw_to_bytes};

pub const MAGIC: &[u8; 8] = b"TCPTRACE";
pub const VERSION: u32 = 1;
/// Kind of a loss-marker record (never produced by the kernel side).
pub const KIND_LOST: u8 = 0xFF;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a tcp-trace recording (bad magic)")]
    BadMagic,
    #[error("recording version {0} is newer than this tcp-trace understands ({VERSION})")]
    Version(u32),
    #[error("recording has records of {0} bytes, smaller than any event version")]
    RecordSize(u32),
    #[error("recording is truncated: {0}")]
    Truncated(&'static str),
    #[error("bad metadata: {0}")]
    Meta(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Header {
    pub wall_offset_ns: i64,
    pub meta: serde_json::Value,
}

pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W, header: &Header) -> io::Result<Writer<W>> {
        let meta = serde_json::to_vec(&header.meta)?;
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&(RAW_EVENT_SIZE as u32).to_le_bytes())?;
        out.write_all(&header.wall_offset_ns.to_le_bytes())?;
        out.write_all(&(meta.len() as u32).to_le_bytes())?;
        out.write_all(&meta)?;
        Ok(Writer { out })
    }

    pub fn event(&mut self, raw: &RawEvent) -> io::Result<()> {
        self.out.write_all(&raw_to_bytes(raw))
    }

    pub fn lost(&mut self, count: u64) -> io::Result<()> {
        let marker = RawEvent {
            kind: KIND_LOST,
            aux: count,
            ..RawEvent::default()
        };
        self.event(&marker)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// One item of a recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Event(RawEvent),
    Lost(u64),
}

pub struct Reader<R: Read> {
    input: R,
    rec_size: usize,
    buf: Vec<u8>,
    pub header: Header,
}

fn read_exact_or<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), RecordError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            RecordError::Truncated(what)
        } else {
            RecordError::Io(e)
        }
    })
}

impl<R: Read> Reader<R> {
    pub fn new(mut input: R) -> Result<Reader<R>, RecordError> {
        let mut fixed = [0u8; 28];
        read_exact_or(&mut input, &mut fixed, "header").map_err(|e| match e {
            RecordError::Truncated(_) => RecordError::BadMagic,
            e => e,
        })?;
        if &fixed[..8] != MAGIC {
            return Err(RecordError::BadMagic);
        }
        let u32_at = |i: usize| u32::from_le_bytes(fixed[i..i + 4].try_into().unwrap_or([0; 4]));
        let version = u32_at(8);
        if version == 0 || version > VERSION {
            return Err(RecordError::Version(version));
        }
        let rec_size = u32_at(12);
        if (rec_size as usize) < tcp_trace_common::RAW_EVENT_SIZE_V1 || rec_size > 1 << 16 {
            return Err(RecordError::RecordSize(rec_size));
        }
        let wall_offset_ns = i64::from_le_bytes(fixed[16..24].try_into().unwrap_or([0; 8]));
        let meta_len = u32_at(24);
        if meta_len > 1 << 20 {
            return Err(RecordError::Meta(format!("{meta_len} bytes of metadata")));
        }
        let mut meta = vec![0u8; meta_len as usize];
        read_exact_or(&mut input, &mut meta, "metadata")?;
        let meta = if meta.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&meta).map_err(|e| RecordError::Meta(e.to_string()))?
        };
        Ok(Reader {
            input,
            rec_size: rec_size as usize,
            buf: vec![0; rec_size as usize],
            header: Header {
                wall_offset_ns,
                meta,
            },
        })
    }

    /// The next item; `Ok(None)` at a clean end of file.
    pub fn next_item(&mut self) -> Result<Option<Item>, RecordError> {
        let mut got = 0;
        while got < self.rec_size {
            match self.input.read(&mut self.buf[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(RecordError::Truncated("last record")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let raw = raw_from_bytes(&self.buf).map_err(|_| RecordError::Truncated("record"))?;
        Ok(Some(if raw.kind == KIND_LOST {
            Item::Lost(raw.aux)
        } else {
            Item::Event(raw)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcp_trace_common::kind;

    fn sample(i: u64) -> RawEvent {
        RawEvent {
            ts_ns: 1000 + i,
            skaddr: 0xffff_0000 + i,
            kind: kind::STATE,
            oldstate: 7,
            newstate: 2,
            family: 2,
            sport: 40000,
            dport: 80,
            ..RawEvent::default()
        }
    }

    #[test]
    fn round_trip() {
        let header = Header {
            wall_offset_ns: 1_700_000_000_000_000_000,
            meta: serde_json::json!({"kernel": "6.18"}),
        };
        let mut w = Writer::new(Vec::new(), &header).unwrap();
        w.event(&sample(1)).unwrap();
        w.lost(7).unwrap();
        w.event(&sample(2)).unwrap();
        let bytes = w.into_inner();
        let mut r = Reader::new(&bytes[..]).unwrap();
        assert_eq!(r.header, header);
        assert_eq!(r.next_item().unwrap(), Some(Item::Event(sample(1))));
        assert_eq!(r.next_item().unwrap(), Some(Item::Lost(7)));
        assert_eq!(r.next_item().unwrap(), Some(Item::Event(sample(2))));
        assert_eq!(r.next_item().unwrap(), None);
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(matches!(
            Reader::new(&b"hello"[..]),
            Err(RecordError::BadMagic)
        ));
        assert!(matches!(
            Reader::new(&b"NOTATRACEFILE_______________________"[..]),
            Err(RecordError::BadMagic)
        ));
        let mut w = Writer::new(Vec::new(), &Header::default()).unwrap();
        w.event(&sample(1)).unwrap();
        let mut bytes = w.into_inner();
        bytes.truncate(bytes.len() - 3);
        let mut r = Reader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_item(), Err(RecordError::Truncated(_))));
        let mut newer = Writer::new(Vec::new(), &Header::default())
            .unwrap()
            .into_inner();
        newer[8] = 9;
        assert!(matches!(
            Reader::new(&newer[..]),
            Err(RecordError::Version(9))
        ));
    }
}
