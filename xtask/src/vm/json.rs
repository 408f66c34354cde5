//! The guest's result line and cargo's JSON messages, read with serde_json; the
//! accessors below answer `None` (or an empty slice) for a missing key or another type.

use anyhow::Result;

pub use serde_json::Value;

/// Typed look-ups of an object's members.
pub trait Fields {
    /// A non-negative integer (an integral float such as `12.0` too).
    fn u64(&self, key: &str) -> Option<u64>;
    /// An integer (an integral float too).
    fn i64(&self, key: &str) -> Option<i64>;
    fn str(&self, key: &str) -> Option<&str>;
    /// The array at `key`; empty when absent or not an array.
    fn array(&self, key: &str) -> &[Value];
}

impl Fields for Value {
    fn u64(&self, key: &str) -> Option<u64> {
        let v = self.get(key)?;
        v.as_u64().or_else(|| {
            v.as_f64()
                .filter(|n| *n >= 0.0 && n.fract() == 0.0)
                .map(|n| n as u64)
        })
    }

    fn i64(&self, key: &str) -> Option<i64> {
        let v = self.get(key)?;
        v.as_i64()
            .or_else(|| v.as_f64().filter(|n| n.fract() == 0.0).map(|n| n as i64))
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    fn array(&self, key: &str) -> &[Value] {
        self.get(key)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }
}

/// One JSON document (trailing characters other than whitespace are an error).
pub fn parse(text: &str) -> Result<Value> {
    Ok(serde_json::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_result_line() {
        let v = parse(
            r#"{"kernel":"6.1.0-56-cloud-amd64","passed":12,"failed":1,"binaries":[{"name":"live","exit":101}],"failures":["live::a \"b\""],"errors":[]}"#,
        )
        .unwrap();
        assert_eq!(v.str("kernel"), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(v.u64("passed"), Some(12));
        assert_eq!(v.array("binaries")[0].i64("exit"), Some(101));
        assert_eq!(v.array("failures")[0].as_str(), Some("live::a \"b\""));
        assert!(v.array("errors").is_empty());
        assert!(parse("{\"a\":1").is_err());
        assert!(parse("{} x").is_err());
    }
}
