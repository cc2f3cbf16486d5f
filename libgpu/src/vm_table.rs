//! A VM's mapping table as the scheme's VM view gives it (`docs/uapi.md`, "VM views").
//!
//! Owns: `VmTable` / `VmMapping` (the typed table), the parser of the view's text, and the
//! paged read of a view handle. Must not: open views (`Vm::mapping_table` and gpuctl do) or
//! guess: a table whose `mappings` count disagrees with its lines is rejected, never patched.
//!
//! The text: `key: value` header lines (`vm-id`, `vm-daemon-id`, `client`, `mappings`,
//! `flags`; unknown keys are skipped), then one line per mapping in VA order:
//! `<start> <end> bo=<id|-> offset=<hex>[ ro][ null|userptr|mirror]` (unknown words skipped,
//! so the server may add some).

use gpu_scheme::uapi::flags::VmCreateFlags;
use gpu_scheme::uapi::{BoId, VmId};
use thiserror::Error;

use crate::error::{Call, Error, Result, TransportError};
use crate::transport::Handle;

/// Bytes read per `read` of a view.
const READ_CHUNK: usize = 64 << 10;
/// A view's text is never larger than this; more means a broken server.
const MAX_TEXT: usize = 256 << 20;

/// What backs a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingKind {
    /// A BO (`VmMapping::bo` names it when this client has an id for it).
    Bo,
    /// A NULL (sparse) mapping.
    Null,
    /// Client CPU memory (`VmMapping::offset` is the CPU address).
    Userptr,
    /// A CPU_ADDR_MIRROR (SVM) range.
    Mirror,
}

/// One GPU VA mapping, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmMapping {
    /// First GPU VA.
    pub start: u64,
    /// One past the last GPU VA.
    pub end: u64,
    /// The mapped BO's id in the VM's client (`None`: not a BO, or a BO that client no longer
    /// names, e.g. after BO_DESTROY while still mapped).
    pub bo: Option<BoId>,
    /// BO offset of `start` (BO mappings), CPU address (userptr), else 0.
    pub offset: u64,
    /// Mapped read-only.
    pub read_only: bool,
    /// What backs it.
    pub kind: MappingKind,
}

/// A whole VM view: the header and every mapping in VA order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmTable {
    /// The VM's id in its client.
    pub vm: VmId,
    /// gpud's daemon-wide id of the VM (what `gpuctl vm <id>` takes).
    pub daemon_id: u64,
    /// The client (device handle) that owns the VM, as `gpuctl clients` numbers it.
    pub client: u64,
    /// The flags the VM was created with.
    pub flags: VmCreateFlags,
    /// Every mapping, in VA order.
    pub mappings: Vec<VmMapping>,
}

/// Why a view's text did not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TableParseError {
    /// A header key is missing or its value is not a number.
    #[error("bad or missing header `{0}`")]
    Header(&'static str),
    /// A mapping line (1-based line number of the text) is malformed.
    #[error("malformed mapping on line {0}")]
    Line(usize),
    /// The header's mapping count and the lines disagree (a truncated read).
    #[error("header says {expected} mappings, text has {found}")]
    Count {
        /// From the header.
        expected: usize,
        /// Lines found.
        found: usize,
    },
}

impl VmTable {
    /// Parse a view's text.
    pub fn parse(text: &str) -> std::result::Result<VmTable, TableParseError> {
        let mut lines = text.lines().enumerate().peekable();
        let mut header = std::collections::HashMap::new();
        while let Some((_, l)) = lines.peek() {
            let Some((k, v)) = l.split_once(": ") else {
                break;
            };
            header.insert(k, v);
            lines.next();
        }
        let num = |key: &'static str| {
            let v = header.get(key).ok_or(TableParseError::Header(key))?;
            v.parse::<u64>().map_err(|_| TableParseError::Header(key))
        };
        let vm = u32::try_from(num("vm-id")?).map_err(|_| TableParseError::Header("vm-id"))?;
        let expected =
            usize::try_from(num("mappings")?).map_err(|_| TableParseError::Header("mappings"))?;
        let flags = header
            .get("flags")
            .ok_or(TableParseError::Header("flags"))?;
        let mut mappings = Vec::with_capacity(expected.min(1 << 16));
        for (i, l) in lines {
            mappings.push(parse_mapping(l).ok_or(TableParseError::Line(i + 1))?);
        }
        if mappings.len() != expected {
            return Err(TableParseError::Count {
                expected,
                found: mappings.len(),
            });
        }
        Ok(VmTable {
            vm: VmId(vm),
            daemon_id: num("vm-daemon-id")?,
            client: num("client")?,
            flags: parse_flags(flags),
            mappings,
        })
    }
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// `<start> <end> bo=<id|-> offset=<hex> [words]`.
fn parse_mapping(line: &str) -> Option<VmMapping> {
    let mut words = line.split_ascii_whitespace();
    let start = hex(words.next()?)?;
    let end = hex(words.next()?)?;
    let (mut bo, mut offset) = (None, None);
    let (mut read_only, mut kind) = (false, MappingKind::Bo);
    for w in words {
        match w.split_once('=') {
            Some(("bo", "-")) => bo = Some(None),
            Some(("bo", id)) => bo = Some(Some(BoId(id.parse().ok()?))),
            Some(("offset", o)) => offset = Some(hex(o)?),
            Some(_) => {}
            None => match w {
                "ro" => read_only = true,
                "null" => kind = MappingKind::Null,
                "userptr" => kind = MappingKind::Userptr,
                "mirror" => kind = MappingKind::Mirror,
                _ => {}
            },
        }
    }
    (start < end).then_some(VmMapping {
        start,
        end,
        bo: bo?,
        offset: offset?,
        read_only,
        kind,
    })
}

/// `none`, or comma-separated names; unknown names are skipped.
fn parse_flags(s: &str) -> VmCreateFlags {
    s.split(',')
        .map(|w| match w.trim() {
            "scratch-page" => VmCreateFlags::SCRATCH_PAGE,
            "lr-mode" => VmCreateFlags::LR_MODE,
            "fault-mode" => VmCreateFlags::FAULT_MODE,
            _ => VmCreateFlags::empty(),
        })
        .fold(VmCreateFlags::empty(), |a, b| a | b)
}

/// Read a view handle's whole text, page by page from offset 0 (the server renders one
/// snapshot at offset 0 and pages through it).
pub fn read_view(handle: &dyn Handle) -> Result<String> {
    let mut text = Vec::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let offset = text.len() as u64;
        let n = handle
            .read(&mut buf, offset)
            .map_err(|e| Error::new(Call::Read, e))?;
        if n == 0 {
            break;
        }
        let page = buf
            .get(..n)
            .ok_or(Error::new(Call::Read, TransportError::BadReply))?;
        text.extend_from_slice(page);
        if text.len() > MAX_TEXT {
            return Err(Error::new(Call::Read, TransportError::BadReply));
        }
    }
    String::from_utf8(text).map_err(|_| Error::new(Call::Read, TransportError::BadReply))
}

/// Read and parse a view handle.
pub fn read_table(handle: &dyn Handle) -> Result<VmTable> {
    let text = read_view(handle)?;
    VmTable::parse(&text).map_err(|_| Error::new(Call::Read, TransportError::BadReply))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "vm-id: 3\nvm-daemon-id: 17\nclient: 2\nmappings: 4\nflags: scratch-page\n\
        0x000000100000 0x000000104000 bo=5 offset=0x0\n\
        0x000000200000 0x000000202000 bo=5 offset=0x1000 ro\n\
        0x000000300000 0x000000301000 bo=- offset=0x7f000000 userptr\n\
        0x000000400000 0x000000401000 bo=- offset=0x0 null\n";

    #[test]
    fn parses_the_documented_example() {
        let t = VmTable::parse(TEXT).expect("parses");
        assert_eq!(t.vm, VmId(3));
        assert_eq!((t.daemon_id, t.client), (17, 2));
        assert_eq!(t.flags, VmCreateFlags::SCRATCH_PAGE);
        let m = |start, end, bo: Option<u32>, offset, read_only, kind| VmMapping {
            start,
            end,
            bo: bo.map(BoId),
            offset,
            read_only,
            kind,
        };
        assert_eq!(
            t.mappings,
            vec![
                m(0x10_0000, 0x10_4000, Some(5), 0, false, MappingKind::Bo),
                m(0x20_0000, 0x20_2000, Some(5), 0x1000, true, MappingKind::Bo),
                m(
                    0x30_0000,
                    0x30_1000,
                    None,
                    0x7f00_0000,
                    false,
                    MappingKind::Userptr
                ),
                m(0x40_0000, 0x40_1000, None, 0, false, MappingKind::Null),
            ]
        );
    }

    #[test]
    fn unknown_keys_and_words_are_skipped() {
        let text = "vm-id: 1\nvm-daemon-id: 9\nclient: 1\nnew-key: x\nmappings: 1\n\
                    flags: lr-mode,future\n0x1000 0x2000 bo=2 offset=0x0 ro pat=3 shiny\n";
        let t = VmTable::parse(text).expect("parses");
        assert_eq!(t.flags, VmCreateFlags::LR_MODE);
        assert!(t.mappings[0].read_only);
        let none = TEXT.replace("flags: scratch-page", "flags: none");
        assert_eq!(
            VmTable::parse(&none).expect("parses").flags,
            VmCreateFlags::empty()
        );
    }

    #[test]
    fn malformed_or_truncated_tables_are_errors() {
        let cut = &TEXT[..TEXT.len() - 40];
        assert!(VmTable::parse(cut).is_err(), "a cut line");
        let short: String = TEXT.lines().take(7).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            VmTable::parse(&short),
            Err(TableParseError::Count {
                expected: 4,
                found: 2
            })
        );
        for bad in [
            TEXT.replace("vm-id: 3", "vm-id: x"),
            TEXT.replace("client: 2\n", ""),
            TEXT.replace("bo=5 offset=0x0\n", "offset=0x0\n"),
            TEXT.replace("offset=0x1000", "offset=4096"),
            TEXT.replace("0x000000104000", "0x000000100000"),
            TEXT.replace("bo=5 offset=0x0\n", "bo=five offset=0x0\n"),
        ] {
            assert!(VmTable::parse(&bad).is_err(), "{bad}");
        }
    }
}
