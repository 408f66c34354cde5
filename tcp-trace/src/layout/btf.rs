//! A minimal reader of kernel BTF (`/sys/kernel/btf/vmlinux`): just enough to find
//! the byte offset and size of a struct member, e.g. `sock.__sk_common.skc_num`.
//!
//! Raw BTF is a header followed by a type section and a string section (all little
//! endian on the machines we run on). Each type is a 12-byte `btf_type` plus
//! kind-specific trailing data; type ids start at 1 (0 is `void`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

use super::LayoutError;

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_MIN_LEN: usize = 24;
const TYPE_LEN: usize = 12;

const KIND_INT: u8 = 1;
const KIND_PTR: u8 = 2;
const KIND_ARRAY: u8 = 3;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;
const KIND_ENUM: u8 = 6;
const KIND_FWD: u8 = 7;
const KIND_TYPEDEF: u8 = 8;
const KIND_VOLATILE: u8 = 9;
const KIND_CONST: u8 = 10;
const KIND_RESTRICT: u8 = 11;
const KIND_FUNC: u8 = 12;
const KIND_FUNC_PROTO: u8 = 13;
const KIND_VAR: u8 = 14;
const KIND_DATASEC: u8 = 15;
const KIND_FLOAT: u8 = 16;
const KIND_DECL_TAG: u8 = 17;
const KIND_TYPE_TAG: u8 = 18;
const KIND_ENUM64: u8 = 19;

/// Size of a pointer in the kernels we run on (x86_64, arm64).
const POINTER_SIZE: u64 = 8;
/// Bound on typedef/const/… chains and nested anonymous members, so that a
/// malformed (cyclic) BTF cannot make us loop forever.
const MAX_DEPTH: usize = 64;
/// Bound on the members visited by one lookup (anonymous members can fan out).
const MAX_VISITS: usize = 1 << 20;

/// Offset and size, in bytes, of a struct member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub size: u32,
}

#[derive(Clone, Copy, Debug)]
struct Type {
    kind: u8,
    kind_flag: bool,
    vlen: u16,
    name_off: u32,
    /// `size` for INT, ENUM, STRUCT, UNION, DATASEC, FLOAT, ENUM64; `type` otherwise.
    size_or_type: u32,
    /// Byte offset of the kind-specific trailing data in `Btf::type_sec`.
    extra: u32,
}

/// Parsed BTF: the types, the strings and an index of struct/union names.
pub struct Btf {
    /// Index = type id; entry 0 stands for `void`.
    types: Vec<Type>,
    type_sec: Vec<u8>,
    strings: Vec<u8>,
    /// Struct/union name → type id (the best candidate when several share a name).
    by_name: HashMap<String, u32>,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf")
            .field("types", &(self.types.len() - 1))
            .field("strings_len", &self.strings.len())
            .field("structs", &self.by_name.len())
            .finish()
    }
}

fn malformed(msg: impl Into<String>) -> LayoutError {
    LayoutError::BtfMalformed(msg.into())
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        0 => "void",
        KIND_INT => "INT",
        KIND_PTR => "PTR",
        KIND_ARRAY => "ARRAY",
        KIND_STRUCT => "STRUCT",
        KIND_UNION => "UNION",
        KIND_ENUM => "ENUM",
        KIND_FWD => "FWD",
        KIND_TYPEDEF => "TYPEDEF",
        KIND_VOLATILE => "VOLATILE",
        KIND_CONST => "CONST",
        KIND_RESTRICT => "RESTRICT",
        KIND_FUNC => "FUNC",
        KIND_FUNC_PROTO => "FUNC_PROTO",
        KIND_VAR => "VAR",
        KIND_DATASEC => "DATASEC",
        KIND_FLOAT => "FLOAT",
        KIND_DECL_TAG => "DECL_TAG",
        KIND_TYPE_TAG => "TYPE_TAG",
        KIND_ENUM64 => "ENUM64",
        _ => "unknown",
    }
}

/// Where the member being looked up was found.
struct Found {
    bit_offset: u64,
    type_id: u32,
    /// Bitfield width in bits, 0 when the member is not a bitfield.
    bitfield_size: u32,
}

impl Btf {
    /// Reads and parses a raw BTF file such as `/sys/kernel/btf/vmlinux`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Btf, LayoutError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|io| LayoutError::BtfUnreadable {
            path: path.to_path_buf(),
            io,
        })?;
        Btf::parse(&bytes)
    }

    /// Parses raw BTF bytes.
    pub fn parse(bytes: &[u8]) -> Result<Btf, LayoutError> {
        if bytes.len() < HEADER_MIN_LEN {
            return Err(malformed(format!(
                "{} bytes is too short for a BTF header",
                bytes.len()
            )));
        }
        let magic = u16::from_le_bytes([bytes[0], bytes[1]]);
        if magic == BTF_MAGIC.swap_bytes() {
            return Err(malformed("big-endian BTF is not supported"));
        }
        if magic != BTF_MAGIC {
            return Err(malformed(format!("bad magic {magic:#06x} (not BTF)")));
        }
        let version = bytes[2];
        if version != 1 {
            return Err(malformed(format!("unsupported BTF version {version}")));
        }
        let field = |i: usize| u32_at(bytes, 4 + 4 * i).unwrap_or(0) as u64;
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (field(0), field(1), field(2), field(3), field(4));
        let total = bytes.len() as u64;
        if hdr_len < HEADER_MIN_LEN as u64 || hdr_len > total {
            return Err(malformed(format!("bad header length {hdr_len}")));
        }
        let section = |name: &str, off: u64, len: u64| -> Result<&[u8], LayoutError> {
            let start = hdr_len + off;
            let end = start + len;
            if end > total {
                return Err(malformed(format!(
                    "{name} section ({len} bytes at {start}) runs past the end of the data ({total} bytes)"
                )));
            }
            Ok(&bytes[start as usize..end as usize])
        };
        let type_sec = section("type", type_off, type_len)?.to_vec();
        let strings = section("string", str_off, str_len)?.to_vec();
        if strings.first().is_some_and(|&b| b != 0) {
            return Err(malformed(
                "string section does not start with an empty string",
            ));
        }

        let mut types = Vec::with_capacity(type_sec.len() / 24 + 1);
        types.push(Type {
            kind: 0,
            kind_flag: false,
            vlen: 0,
            name_off: 0,
            size_or_type: 0,
            extra: 0,
        });
        let mut pos = 0usize;
        while pos < type_sec.len() {
            let id = types.len();
            let hdr = type_sec
                .get(pos..pos + TYPE_LEN)
                .ok_or_else(|| malformed(format!("type {id} truncated")))?;
            let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
            let (name_off, info, size_or_type) = (word(0), word(4), word(8));
            let vlen = (info & 0xffff) as u16;
            let kind = ((info >> 24) & 0x1f) as u8;
            let kind_flag = info >> 31 != 0;
            let n = vlen as usize;
            let extra_len = match kind {
                KIND_INT => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => 12 * n,
                KIND_ENUM => 8 * n,
                KIND_FUNC_PROTO => 8 * n,
                KIND_VAR => 4,
                KIND_DATASEC => 12 * n,
                KIND_DECL_TAG => 4,
                KIND_ENUM64 => 12 * n,
                _ => {
                    return Err(malformed(format!(
                        "type {id} has unknown kind {kind} (at byte {pos} of the type section)"
                    )));
                }
            };
            let extra = pos + TYPE_LEN;
            let next = extra + extra_len;
            if next > type_sec.len() {
                return Err(malformed(format!(
                    "type {id} ({}) runs past the end of the type section",
                    kind_name(kind)
                )));
            }
            if name_off as usize >= strings.len() && name_off != 0 {
                return Err(malformed(format!(
                    "type {id} has name offset {name_off} outside the string section"
                )));
            }
            types.push(Type {
                kind,
                kind_flag,
                vlen,
                name_off,
                size_or_type,
                extra: u32::try_from(extra).map_err(|_| malformed("type section too large"))?,
            });
            pos = next;
        }

        let mut btf = Btf {
            types,
            type_sec,
            strings,
            by_name: HashMap::new(),
        };
        btf.build_index()?;
        Ok(btf)
    }

    /// Number of types (not counting `void`).
    pub fn type_count(&self) -> usize {
        self.types.len() - 1
    }

    /// The ids of the first typedefs named `names` (the ones libbpf and aya find
    /// too), in one pass over the types.
    pub fn typedef_ids(&self, names: &[&str]) -> Vec<Option<u32>> {
        let mut ids = vec![None; names.len()];
        let mut left = names.len();
        for (id, t) in self.types.iter().enumerate().skip(1) {
            if left == 0 {
                break;
            }
            if t.kind != KIND_TYPEDEF {
                continue;
            }
            let Some(tail) = self.strings.get(t.name_off as usize..) else {
                continue;
            };
            for (slot, want) in ids.iter_mut().zip(names) {
                let want = want.as_bytes();
                if slot.is_none()
                    && tail.len() > want.len()
                    && tail[want.len()] == 0
                    && tail.starts_with(want)
                {
                    *slot = Some(id as u32);
                    left -= 1;
                }
            }
        }
        ids
    }

    fn build_index(&mut self) -> Result<(), LayoutError> {
        // Rank candidates sharing a name: struct with members > union with members >
        // empty struct > empty union. Equal ranks keep the first.
        fn rank(t: &Type) -> u8 {
            match (t.kind, t.vlen > 0) {
                (KIND_STRUCT, true) => 4,
                (KIND_UNION, true) => 3,
                (KIND_STRUCT, false) => 2,
                _ => 1,
            }
        }
        let mut by_name: HashMap<String, u32> = HashMap::with_capacity(16 * 1024);
        for (id, t) in self.types.iter().enumerate().skip(1) {
            if !matches!(t.kind, KIND_STRUCT | KIND_UNION) || t.name_off == 0 {
                continue;
            }
            let name = self.str_at(t.name_off)?;
            if name.is_empty() {
                continue;
            }
            match by_name.entry(name.to_string()) {
                Entry::Vacant(v) => {
                    v.insert(id as u32);
                }
                Entry::Occupied(mut o) => {
                    if rank(t) > rank(&self.types[*o.get() as usize]) {
                        o.insert(id as u32);
                    }
                }
            }
        }
        self.by_name = by_name;
        Ok(())
    }

    fn str_at(&self, off: u32) -> Result<&str, LayoutError> {
        let tail = self
            .strings
            .get(off as usize..)
            .ok_or_else(|| malformed(format!("string offset {off} outside the string section")))?;
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed(format!("string at {off} is not NUL-terminated")))?;
        std::str::from_utf8(&tail[..end])
            .map_err(|_| malformed(format!("string at {off} is not UTF-8")))
    }

    fn ty(&self, id: u32) -> Result<&Type, LayoutError> {
        self.types
            .get(id as usize)
            .ok_or_else(|| malformed(format!("reference to type {id}, which does not exist")))
    }

    fn extra_u32(&self, t: &Type, index: usize) -> Result<u32, LayoutError> {
        u32_at(&self.type_sec, t.extra as usize + 4 * index)
            .ok_or_else(|| malformed("trailing type data out of bounds"))
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<u32, LayoutError> {
        for _ in 0..MAX_DEPTH {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Ok(id),
            }
        }
        Err(malformed(format!(
            "type chain too long (cycle?) at type {id}"
        )))
    }

    /// Size in bytes of a type.
    fn size_of(&self, id: u32, depth: usize) -> Result<u64, LayoutError> {
        if depth > MAX_DEPTH {
            return Err(malformed(format!("type nesting too deep at type {id}")));
        }
        let id = self.resolve(id)?;
        let t = self.ty(id)?;
        match t.kind {
            KIND_INT | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT | KIND_STRUCT | KIND_UNION
            | KIND_DATASEC => Ok(t.size_or_type as u64),
            KIND_PTR => Ok(POINTER_SIZE),
            KIND_ARRAY => {
                let elem = self.extra_u32(t, 0)?;
                let nelems = self.extra_u32(t, 2)? as u64;
                let elem_size = self.size_of(elem, depth + 1)?;
                elem_size
                    .checked_mul(nelems)
                    .ok_or_else(|| malformed(format!("array type {id} is too large")))
            }
            k => Err(malformed(format!(
                "type {id} ({}) has no size",
                kind_name(k)
            ))),
        }
    }

    /// Looks for member `name` in the struct/union `id`: first as C does (direct
    /// members, then through anonymous struct/union members), then, failing that,
    /// inside the first member when it is an embedded struct at offset 0 — the
    /// kernel's "base struct" pattern (`sock` starts with `struct sock_common
    /// __sk_common`, `inet_sock` with `struct sock sk`), so `sock.skc_num` resolves
    /// like the kernel's `sk->sk_num` macro does. Offsets accumulate from `base_bits`.
    fn find_member(
        &self,
        id: u32,
        name: &str,
        base_bits: u64,
        visits: &mut usize,
    ) -> Result<Option<Found>, LayoutError> {
        let mut id = id;
        for _ in 0..MAX_DEPTH {
            if let Some(found) = self.find_member_c(id, name, base_bits, 0, visits)? {
                return Ok(Some(found));
            }
            let t = *self.ty(id)?;
            if t.kind != KIND_STRUCT || t.vlen == 0 {
                return Ok(None);
            }
            let first_type = self.extra_u32(&t, 1)?;
            let first_off = self.extra_u32(&t, 2)?;
            let base = self.resolve(first_type)?;
            if first_off != 0 || self.ty(base)?.kind != KIND_STRUCT {
                return Ok(None);
            }
            id = base;
        }
        Err(malformed(format!(
            "base structs nested too deep at type {id}"
        )))
    }

    /// Member lookup with C rules: direct members, and members of anonymous
    /// struct/union members.
    fn find_member_c(
        &self,
        id: u32,
        name: &str,
        base_bits: u64,
        depth: usize,
        visits: &mut usize,
    ) -> Result<Option<Found>, LayoutError> {
        if depth > MAX_DEPTH {
            return Err(malformed(format!(
                "anonymous members nested too deep at type {id}"
            )));
        }
        let t = *self.ty(id)?;
        for i in 0..t.vlen as usize {
            *visits += 1;
            if *visits > MAX_VISITS {
                return Err(malformed(format!(
                    "too many anonymous members to search at type {id} (cycle?)"
                )));
            }
            let m_name = self.extra_u32(&t, 3 * i)?;
            let m_type = self.extra_u32(&t, 3 * i + 1)?;
            let m_off = self.extra_u32(&t, 3 * i + 2)?;
            let (bit_off, bitfield_size) = if t.kind_flag {
                (m_off & 0x00ff_ffff, m_off >> 24)
            } else {
                (m_off, 0)
            };
            let bit_offset = base_bits + bit_off as u64;
            let m_name = if m_name == 0 {
                ""
            } else {
                self.str_at(m_name)?
            };
            if m_name == name {
                return Ok(Some(Found {
                    bit_offset,
                    type_id: m_type,
                    bitfield_size,
                }));
            }
            if m_name.is_empty() {
                let inner = self.resolve(m_type)?;
                if matches!(self.ty(inner)?.kind, KIND_STRUCT | KIND_UNION)
                    && let Some(found) =
                        self.find_member_c(inner, name, bit_offset, depth + 1, visits)?
                {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Finds `struct_name.member.member…`: the byte offset from the start of the
    /// named struct (or union) and the size of the last member. Members of
    /// anonymous struct/union members are found transparently.
    pub fn member(&self, path: &str) -> Result<Member, LayoutError> {
        let not_found = |reason: String| LayoutError::BtfMemberNotFound {
            path: path.to_string(),
            reason,
        };
        let mut parts = path.split('.');
        let struct_name = parts.next().unwrap_or_default();
        let members: Vec<&str> = parts.collect();
        if struct_name.is_empty() || members.is_empty() || members.iter().any(|m| m.is_empty()) {
            return Err(not_found(
                "expected a path of the form `struct.member[.member…]`".into(),
            ));
        }
        let mut cur = *self
            .by_name
            .get(struct_name)
            .ok_or_else(|| not_found(format!("no struct or union named `{struct_name}`")))?;
        let mut cur_name = struct_name.to_string();
        let mut bits: u64 = 0;
        let mut last: Option<Found> = None;
        for (i, &m) in members.iter().enumerate() {
            if i > 0 {
                let prev = last.as_ref().map(|f| f.type_id).unwrap_or(0);
                let resolved = self.resolve(prev)?;
                let t = self.ty(resolved)?;
                if !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
                    return Err(not_found(format!(
                        "`{cur_name}` is a {}, not a struct or union",
                        kind_name(t.kind)
                    )));
                }
                if last.as_ref().is_some_and(|f| f.bitfield_size != 0) {
                    return Err(not_found(format!("`{cur_name}` is a bitfield")));
                }
                cur = resolved;
            }
            let found = self
                .find_member(cur, m, bits, &mut 0)?
                .ok_or_else(|| not_found(format!("`{cur_name}` has no member `{m}`")))?;
            bits = found.bit_offset;
            cur_name = m.to_string();
            last = Some(found);
        }
        let found = last.expect("at least one member");
        let type_size = self.size_of(found.type_id, 0)?;
        let bitfield_bits = if found.bitfield_size != 0 {
            Some(found.bitfield_size as u64)
        } else {
            // Old-style bitfield (struct without kind_flag): encoded in the INT type.
            let t = self.ty(self.resolve(found.type_id)?)?;
            if t.kind == KIND_INT {
                let enc = self.extra_u32(t, 0)?;
                let nr_bits = (enc & 0xff) as u64;
                let int_off = ((enc >> 16) & 0xff) as u64;
                if int_off != 0 || nr_bits != type_size * 8 {
                    Some(nr_bits)
                } else {
                    None
                }
            } else {
                None
            }
        };
        let size = match bitfield_bits {
            None => type_size,
            Some(b) => {
                if !bits.is_multiple_of(8) || !b.is_multiple_of(8) {
                    return Err(LayoutError::BtfBitfield {
                        path: path.to_string(),
                        bit_offset: bits,
                        bits: b,
                    });
                }
                b / 8
            }
        };
        if !bits.is_multiple_of(8) {
            return Err(LayoutError::BtfBitfield {
                path: path.to_string(),
                bit_offset: bits,
                bits: size * 8,
            });
        }
        let too_big = || malformed(format!("`{path}`: offset or size does not fit 32 bits"));
        Ok(Member {
            offset: u32::try_from(bits / 8).map_err(|_| too_big())?,
            size: u32::try_from(size).map_err(|_| too_big())?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds raw BTF blobs for tests.
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }
        pub(crate) fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }
        fn push_words(&mut self, words: &[u32]) {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }
        /// Adds a type; returns its id.
        pub(crate) fn ty(
            &mut self,
            name: &str,
            kind: u8,
            kind_flag: bool,
            vlen: u16,
            size_or_type: u32,
            extra: &[u32],
        ) -> u32 {
            let name = self.str(name);
            let info = ((kind as u32) << 24) | vlen as u32 | if kind_flag { 1 << 31 } else { 0 };
            self.push_words(&[name, info, size_or_type]);
            self.push_words(extra);
            self.next_id += 1;
            self.next_id - 1
        }
        pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
            self.ty(name, KIND_INT, false, 0, size, &[size * 8])
        }
        /// `members`: (name, type, offset word).
        pub(crate) fn composite(
            &mut self,
            kind: u8,
            name: &str,
            kind_flag: bool,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let mut extra = Vec::new();
            for &(n, t, o) in members {
                let n = self.str(n);
                extra.extend_from_slice(&[n, t, o]);
            }
            self.ty(name, kind, kind_flag, members.len() as u16, size, &extra)
        }
        pub(crate) fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.push(1); // version
            out.push(0); // flags
            let words = [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ];
            for w in words {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A small BTF with every kind, a struct with an anonymous union inside, a
    /// typedef'd const struct member, bitfields and an array.
    fn synthetic() -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.int("int", 4); // 1
        let u16_ = b.int("unsigned short", 2); // 2
        let void_ptr = b.ty("", KIND_PTR, false, 0, 0, &[]); // 3
        // Kinds that must be skipped with their trailing data, before the structs.
        let s_a = b.str("A");
        let s_b = b.str("B");
        b.ty("e", KIND_ENUM, false, 2, 4, &[s_a, 0, s_b, 1]);
        b.ty("e64", KIND_ENUM64, false, 2, 8, &[s_a, 0, 0, s_b, 1, 1]);
        let s_x = b.str("x");
        let proto = b.ty("", KIND_FUNC_PROTO, false, 2, int, &[s_x, int, 0, void_ptr]);
        let func = b.ty("f", KIND_FUNC, false, 0, proto, &[]);
        let var = b.ty("v", KIND_VAR, false, 0, int, &[1]);
        b.ty(".data", KIND_DATASEC, false, 1, 4, &[var, 0, 4]);
        b.ty("double", KIND_FLOAT, false, 0, 8, &[]);
        b.ty("tag", KIND_DECL_TAG, false, 0, func, &[u32::MAX]);
        b.ty("rcu", KIND_TYPE_TAG, false, 0, int, &[]);
        b.ty("inner", KIND_FWD, false, 0, 0, &[]); // a forward decl sharing a name
        b.ty("", KIND_VOLATILE, false, 0, int, &[]);
        b.ty("", KIND_RESTRICT, false, 0, void_ptr, &[]);
        let arr = b.ty("", KIND_ARRAY, false, 0, 0, &[u16_, int, 5]); // u16[5]

        // struct inner { u16 x; u16 y; int pad; }
        let inner = b.composite(
            KIND_STRUCT,
            "inner",
            false,
            8,
            &[("x", u16_, 0), ("y", u16_, 16), ("pad", int, 32)],
        );
        let inner_t = b.ty("inner_t", KIND_TYPEDEF, false, 0, inner, &[]);
        let const_inner_t = b.ty("", KIND_CONST, false, 0, inner_t, &[]);
        // anonymous struct { u16 hi; u16 lo; }
        let anon_struct = b.composite(
            KIND_STRUCT,
            "",
            false,
            4,
            &[("hi", u16_, 0), ("lo", u16_, 16)],
        );
        // anonymous union { int a; void *p; struct { u16 hi; u16 lo; }; }
        let anon_union = b.composite(
            KIND_UNION,
            "",
            false,
            8,
            &[("a", int, 0), ("p", void_ptr, 0), ("", anon_struct, 0)],
        );
        // An old-style (no kind_flag) bitfield: a 3-bit INT.
        let int3 = b.ty("int", KIND_INT, false, 0, 4, &[3]);
        let legacy = b.composite(
            KIND_STRUCT,
            "legacy",
            false,
            4,
            &[("b3", int3, 0), ("whole", int, 0)],
        );
        let _ = legacy;
        // struct outer { int first; union {...}; const inner_t in; int bits:3;
        //                int byte:8; u16 arr[5]; }  (kind_flag = 1)
        let outer = b.composite(
            KIND_STRUCT,
            "outer",
            true,
            40,
            &[
                ("first", int, 0),
                ("", anon_union, 64),
                ("in", const_inner_t, 128),
                ("bits", int, (3 << 24) | 192),
                ("byte", int, (8 << 24) | 200),
                ("arr", arr, 224),
                ("ptr", void_ptr, 256),
            ],
        );
        // struct derived { struct outer base; int z; }: "base struct" pattern.
        b.composite(
            KIND_STRUCT,
            "derived",
            false,
            48,
            &[("base", outer, 0), ("z", int, 320)],
        );
        // struct not_base { int z; struct outer o; }: `o` is not at offset 0.
        b.composite(
            KIND_STRUCT,
            "not_base",
            false,
            48,
            &[("z", int, 0), ("o", outer, 64)],
        );
        // A union named like a struct, and an empty struct named "outer" (must lose).
        b.composite(KIND_STRUCT, "outer", false, 0, &[]);
        b.build()
    }

    #[test]
    fn synthetic_members() {
        let btf = Btf::parse(&synthetic()).unwrap();
        let m = |p: &str| btf.member(p).unwrap();
        assert_eq!(m("outer.first"), Member { offset: 0, size: 4 });
        // Through the anonymous union.
        assert_eq!(m("outer.a"), Member { offset: 8, size: 4 });
        assert_eq!(m("outer.p"), Member { offset: 8, size: 8 });
        // Through the anonymous struct inside the anonymous union.
        assert_eq!(m("outer.hi"), Member { offset: 8, size: 2 });
        assert_eq!(
            m("outer.lo"),
            Member {
                offset: 10,
                size: 2
            }
        );
        // Through const + typedef.
        assert_eq!(
            m("outer.in"),
            Member {
                offset: 16,
                size: 8
            }
        );
        assert_eq!(
            m("outer.in.x"),
            Member {
                offset: 16,
                size: 2
            }
        );
        assert_eq!(
            m("outer.in.y"),
            Member {
                offset: 18,
                size: 2
            }
        );
        assert_eq!(
            m("outer.in.pad"),
            Member {
                offset: 20,
                size: 4
            }
        );
        assert_eq!(m("inner.y"), Member { offset: 2, size: 2 });
        // A byte-aligned, byte-sized bitfield is readable.
        assert_eq!(
            m("outer.byte"),
            Member {
                offset: 25,
                size: 1
            }
        );
        assert_eq!(
            m("outer.arr"),
            Member {
                offset: 28,
                size: 10
            }
        );
        assert_eq!(
            m("outer.ptr"),
            Member {
                offset: 32,
                size: 8
            }
        );
        assert_eq!(m("legacy.whole"), Member { offset: 0, size: 4 });
        // Members of a first, embedded struct at offset 0 (like `sock.skc_num`).
        assert_eq!(
            m("derived.base"),
            Member {
                offset: 0,
                size: 40
            }
        );
        assert_eq!(
            m("derived.z"),
            Member {
                offset: 40,
                size: 4
            }
        );
        assert_eq!(m("derived.first"), Member { offset: 0, size: 4 });
        assert_eq!(
            m("derived.lo"),
            Member {
                offset: 10,
                size: 2
            }
        );
        assert_eq!(
            m("derived.in.y"),
            Member {
                offset: 18,
                size: 2
            }
        );
        assert_eq!(
            m("derived.base.lo"),
            Member {
                offset: 10,
                size: 2
            }
        );
        assert_eq!(
            m("not_base.o.lo"),
            Member {
                offset: 18,
                size: 2
            }
        );

        // A 3-bit bitfield is not.
        let e = btf.member("outer.bits").unwrap_err();
        assert!(matches!(e, LayoutError::BtfBitfield { .. }), "{e}");
        assert!(e.to_string().contains("outer.bits"), "{e}");
        let e = btf.member("legacy.b3").unwrap_err();
        assert!(matches!(e, LayoutError::BtfBitfield { .. }), "{e}");

        for bad in [
            "outer.nope",
            "outer.in.nope",
            "outer.first.x",
            "nostruct.x",
            "outer",
            "outer.",
            "",
            ".first",
            "e.A",
            "int.x",
            "not_base.lo",
            "derived.nope",
        ] {
            let e = btf.member(bad).unwrap_err();
            assert!(
                matches!(e, LayoutError::BtfMemberNotFound { .. }),
                "{bad}: {e}"
            );
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn malformed_blobs_error_without_panic() {
        let good = synthetic();
        assert!(Btf::parse(&good).is_ok());
        // Every truncation.
        for len in 0..good.len() {
            let e = Btf::parse(&good[..len]).unwrap_err();
            assert!(matches!(e, LayoutError::BtfMalformed(_)), "{len}: {e}");
        }
        // Random mutations of header, types and strings.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5000 {
            let mut bytes = good.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = next() as u8;
            }
            if let Ok(btf) = Btf::parse(&bytes) {
                for p in [
                    "outer.hi",
                    "outer.in.y",
                    "outer.arr",
                    "outer.bits",
                    "legacy.b3",
                ] {
                    let _ = btf.member(p);
                }
            }
        }
        // Specific failures.
        let mut bad = good.clone();
        bad[0] = 0;
        assert!(matches!(
            Btf::parse(&bad),
            Err(LayoutError::BtfMalformed(_))
        ));
        let mut be = good.clone();
        be.swap(0, 1);
        let e = Btf::parse(&be).unwrap_err();
        assert!(e.to_string().contains("big-endian"), "{e}");
        assert!(matches!(Btf::parse(&[]), Err(LayoutError::BtfMalformed(_))));
        // An unknown kind.
        let mut b = Builder::new();
        b.ty("x", 25, false, 0, 0, &[]);
        let e = Btf::parse(&b.build()).unwrap_err();
        assert!(e.to_string().contains("unknown kind"), "{e}");
        // A typedef cycle.
        let mut b = Builder::new();
        b.ty("t1", KIND_TYPEDEF, false, 0, 2, &[]);
        b.ty("t2", KIND_TYPEDEF, false, 0, 1, &[]);
        b.composite(KIND_STRUCT, "s", false, 4, &[("m", 1, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert!(matches!(
            btf.member("s.m"),
            Err(LayoutError::BtfMalformed(_))
        ));
        assert!(matches!(
            btf.member("s.m.x"),
            Err(LayoutError::BtfMalformed(_))
        ));
        // A struct that contains itself as an anonymous member.
        let mut b = Builder::new();
        b.composite(KIND_STRUCT, "s", false, 4, &[("", 1, 0), ("", 1, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert!(matches!(
            btf.member("s.m"),
            Err(LayoutError::BtfMalformed(_))
        ));
        // A dangling type reference.
        let mut b = Builder::new();
        b.composite(KIND_STRUCT, "s", false, 4, &[("m", 99, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert!(matches!(
            btf.member("s.m"),
            Err(LayoutError::BtfMalformed(_))
        ));
    }

    #[test]
    fn missing_file_is_unreadable() {
        let e = Btf::from_file("/nonexistent/btf/vmlinux").unwrap_err();
        assert!(matches!(e, LayoutError::BtfUnreadable { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/btf/vmlinux"), "{e}");
    }
}
