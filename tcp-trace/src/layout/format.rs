//! Parser for tracefs `format` files (`/sys/kernel/tracing/events/<group>/<name>/format`).
//!
//! A format file looks like this:
//!
//! ```text
//! name: inet_sock_set_state
//! ID: 2287
//! format:
//!     field:unsigned short common_type;    offset:0;    size:2;    signed:0;
//!     ...
//!     field:__u8 saddr[4];    offset:32;    size:4;    signed:0;
//!
//! print fmt: "family=%s ...", ...
//! ```
//!
//! Only `name`, `ID` and the `field:` lines matter here; everything else is ignored.

use super::LayoutError;

/// One parsed tracefs format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    /// Event name (`inet_sock_set_state`).
    pub name: String,
    /// Event id (differs between kernels: never hard-code it).
    pub id: u32,
    /// Fields in file order, common fields included.
    pub fields: Vec<Field>,
}

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Identifier of the declaration, any `[N]` stripped (`saddr`).
    pub name: String,
    /// The declaration as written (`__u8 saddr[4]`).
    pub decl: String,
    /// Byte offset in the record.
    pub offset: u16,
    /// Size in bytes.
    pub size: u16,
    pub signed: bool,
}

impl Format {
    /// Parses the text of a format file.
    pub fn parse(text: &str) -> Result<Format, LayoutError> {
        Self::parse_from(text, "<input>")
    }

    /// Like [`Format::parse`]; `origin` (usually the file path) names the input in errors.
    pub fn parse_from(text: &str, origin: &str) -> Result<Format, LayoutError> {
        let err = |line: usize, reason: String| LayoutError::FormatMalformed {
            origin: origin.to_string(),
            line,
            reason,
        };
        let mut name: Option<String> = None;
        let mut id: Option<u32> = None;
        let mut fields = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let lineno = i + 1;
            let line = raw.trim();
            if line.starts_with("print fmt:") {
                // The print format is free text (one line) and comes last.
                break;
            }
            if let Some(rest) = line.strip_prefix("name:") {
                let n = rest.trim();
                if n.is_empty() || !n.chars().all(is_ident_char) {
                    return Err(err(lineno, format!("bad event name {n:?}")));
                }
                name = Some(n.to_string());
            } else if let Some(rest) = line.strip_prefix("ID:") {
                let v = rest.trim();
                id = Some(
                    v.parse()
                        .map_err(|_| err(lineno, format!("bad event ID {v:?}")))?,
                );
            } else if line.starts_with("field:") {
                fields.push(parse_field(line).map_err(|reason| err(lineno, reason))?);
            }
            // `format:`, blank lines and anything unknown are ignored.
        }
        let name = name.ok_or_else(|| err(0, "no `name:` line".into()))?;
        let id = id.ok_or_else(|| err(0, "no `ID:` line".into()))?;
        if fields.is_empty() {
            return Err(err(0, "no `field:` lines".into()));
        }
        Ok(Format { name, id, fields })
    }

    /// The field named `name`, if any.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parses `field:DECL;\toffset:N;\tsize:N;\tsigned:N;` (`signed:` is optional:
/// very old kernels do not print it).
fn parse_field(line: &str) -> Result<Field, String> {
    let mut decl: Option<&str> = None;
    let mut offset: Option<u16> = None;
    let mut size: Option<u16> = None;
    let mut signed = false;
    for part in line.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, value) = part
            .split_once(':')
            .ok_or_else(|| format!("expected `key:value`, found {part:?}"))?;
        let value = value.trim();
        let number = |what: &str| -> Result<u16, String> {
            value
                .parse::<u16>()
                .map_err(|_| format!("bad {what} {value:?}"))
        };
        match key.trim() {
            "field" => decl = Some(value),
            "offset" => offset = Some(number("offset")?),
            "size" => size = Some(number("size")?),
            "signed" => {
                signed = match value {
                    "0" => false,
                    "1" => true,
                    _ => return Err(format!("bad signed flag {value:?}")),
                }
            }
            // Unknown attributes are tolerated.
            _ => {}
        }
    }
    let decl = decl.ok_or("no declaration")?;
    let name = decl_name(decl).ok_or_else(|| format!("no identifier in declaration {decl:?}"))?;
    Ok(Field {
        name: name.to_string(),
        decl: decl.to_string(),
        offset: offset.ok_or("no offset")?,
        size: size.ok_or("no size")?,
        signed,
    })
}

/// The identifier a C declaration declares: `__u8 saddr[4]` → `saddr`,
/// `const void * skaddr` → `skaddr`, `__data_loc char[] name` → `name`.
fn decl_name(decl: &str) -> Option<&str> {
    let mut s = decl.trim();
    while let Some(stripped) = s.strip_suffix(']') {
        let open = stripped.rfind('[')?;
        s = stripped[..open].trim_end();
    }
    let start = s
        .char_indices()
        .rev()
        .take_while(|&(_, c)| is_ident_char(c))
        .last()
        .map(|(i, _)| i)?;
    let name = &s[start..];
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "name: inet_sock_set_state\nID: 2287\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\
\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;\n\
\tfield:__data_loc char[] name;\toffset:72;\tsize:4;\tsigned:0;\n\
\n\
print fmt: \"field:x; offset:nonsense\", REC->skaddr\n";

    #[test]
    fn parses_sample() {
        let f = Format::parse(SAMPLE).unwrap();
        assert_eq!(f.name, "inet_sock_set_state");
        assert_eq!(f.id, 2287);
        assert_eq!(f.fields.len(), 5);
        let pid = f.field("common_pid").unwrap();
        assert_eq!((pid.offset, pid.size, pid.signed), (4, 4, true));
        let sk = f.field("skaddr").unwrap();
        assert_eq!(sk.decl, "const void * skaddr");
        assert_eq!((sk.offset, sk.size, sk.signed), (8, 8, false));
        let sa = f.field("saddr").unwrap();
        assert_eq!(sa.decl, "__u8 saddr[4]");
        assert_eq!((sa.offset, sa.size), (32, 4));
        assert_eq!(f.field("name").unwrap().offset, 72);
        assert!(f.field("daddr").is_none());
    }

    #[test]
    fn decl_names() {
        assert_eq!(decl_name("__u8 saddr[28]"), Some("saddr"));
        assert_eq!(decl_name("const void * skaddr"), Some("skaddr"));
        assert_eq!(decl_name("const void *skaddr"), Some("skaddr"));
        assert_eq!(decl_name("enum sk_rst_reason reason"), Some("reason"));
        assert_eq!(decl_name("char comm[TASK_COMM_LEN]"), Some("comm"));
        assert_eq!(decl_name("int x[2][3]"), Some("x"));
        assert_eq!(decl_name("int"), Some("int"));
        assert_eq!(decl_name(""), None);
        assert_eq!(decl_name("int *"), None);
        assert_eq!(decl_name("int 9x"), None);
        assert_eq!(decl_name("]"), None);
        assert_eq!(decl_name("int x]"), None);
    }

    #[test]
    fn field_without_signed_is_accepted() {
        let f = Format::parse("name: e\nID: 1\n\tfield:int a;\toffset:8;\tsize:4;\n").unwrap();
        assert_eq!(f.field("a").unwrap().offset, 8);
        assert!(!f.field("a").unwrap().signed);
    }

    #[test]
    fn garbage_is_an_error() {
        let cases = [
            "",
            "hello world",
            "\0\u{1}\u{2}\u{fffd}",
            "name: e\n",
            "name: e\nID: x\n\tfield:int a;\toffset:8;\tsize:4;\n",
            "name: e\nID: 1\n",
            "name: e\nID: 1\n\tfield:int a;\toffset:70000;\tsize:4;\n",
            "name: e\nID: 1\n\tfield:int a;\toffset:-1;\tsize:4;\n",
            "name: e\nID: 1\n\tfield:int a;\tsize:4;\n",
            "name: e\nID: 1\n\tfield:int a;\toffset:1;\n",
            "name: e\nID: 1\n\tfield:int a;\toffset:1;\tsize:4;\tsigned:7;\n",
            "name: e\nID: 1\n\tfield:;\toffset:1;\tsize:4;\n",
            "name: e\nID: 1\n\tfield:int *;\toffset:1;\tsize:4;\n",
            "name: e\nID: 1\n\tfield:int a;\toffset 1;\tsize:4;\n",
            "name: e e\nID: 1\n\tfield:int a;\toffset:1;\tsize:4;\n",
            "name:\nID: 1\n\tfield:int a;\toffset:1;\tsize:4;\n",
            "ID: 1\n\tfield:int a;\toffset:1;\tsize:4;\n",
        ];
        for c in cases {
            let e = Format::parse(c).expect_err(c);
            assert!(
                matches!(e, LayoutError::FormatMalformed { .. }),
                "{c:?}: {e}"
            );
        }
    }

    #[test]
    fn truncations_and_mutations_never_panic() {
        // Every prefix of a valid file, and many byte-level mutations of it.
        for end in 0..=SAMPLE.len() {
            if SAMPLE.is_char_boundary(end) {
                let _ = Format::parse(&SAMPLE[..end]);
            }
        }
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b":;[] \t\n0123456789-abcfield";
        for _ in 0..2000 {
            let mut bytes = SAMPLE.as_bytes().to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = alphabet[(next() % alphabet.len() as u64) as usize];
            }
            let _ = Format::parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
