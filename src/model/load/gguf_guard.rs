//! The checks candle's GGUF reader leaves to its caller, made before it is trusted.
//!
//! candle 0.11's `gguf_file::Content::read` bounds counts and string lengths by the file,
//! but divides by `general.alignment` unchecked (0 panics), and its tensor reader
//! multiplies a tensor's dimensions unchecked (an overflow panics in debug builds and, in
//! release, wraps into a size that reaches an unsafe precondition inside candle). So:
//! [`check_metadata`] walks the metadata once, bounded by the file, before candle parses
//! it, and [`check_tensors`] checks every tensor's extent against the file after.
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::gguf_file::Content;

use crate::error::{Error, Result};

/// GGUF value types as the format numbers them (gguf.md): fixed sizes in bytes, or the
/// two variable-length types.
enum Kind {
    Fixed(u64),
    String,
    Array,
}

fn kind(t: u32) -> Option<Kind> {
    Some(match t {
        0 | 1 | 7 => Kind::Fixed(1),
        2 | 3 => Kind::Fixed(2),
        4..=6 => Kind::Fixed(4),
        10..=12 => Kind::Fixed(8),
        8 => Kind::String,
        9 => Kind::Array,
        _ => return None,
    })
}

/// Arrays of arrays nest no deeper than candle allows.
const MAX_DEPTH: usize = 64;

struct Walker<R> {
    r: R,
    len: u64,
    /// Width of a length prefix: 4 bytes in GGUF v1, 8 after.
    wide: bool,
}

impl<R: Read + Seek> Walker<R> {
    fn u32(&mut self) -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.r.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn length(&mut self) -> std::io::Result<u64> {
        if self.wide {
            self.u64()
        } else {
            self.u32().map(u64::from)
        }
    }
    fn remaining(&mut self) -> std::io::Result<u64> {
        Ok(self.len.saturating_sub(self.r.stream_position()?))
    }
    /// Skip `n` bytes that must lie inside the file.
    fn skip(&mut self, n: u64, what: &str) -> std::result::Result<(), String> {
        let left = self.remaining().map_err(|e| e.to_string())?;
        if n > left {
            return Err(format!("{what} needs {n} bytes, only {left} remain"));
        }
        self.r
            .seek(SeekFrom::Current(n as i64))
            .map_err(|e| e.to_string())?;
        Ok(())
    }
    fn string(&mut self, what: &str) -> std::result::Result<Vec<u8>, String> {
        let n = self.length().map_err(|e| format!("{what}: {e}"))?;
        let left = self.remaining().map_err(|e| e.to_string())?;
        if n > left {
            return Err(format!("{what}: a string of {n} bytes, only {left} remain"));
        }
        let mut v = vec![0u8; n as usize];
        self.r
            .read_exact(&mut v)
            .map_err(|e| format!("{what}: {e}"))?;
        Ok(v)
    }
    /// Skip one value of type `t`; `Some(v)` for an integer (the alignment's reader).
    fn value(
        &mut self,
        t: u32,
        key: &str,
        depth: usize,
    ) -> std::result::Result<Option<u64>, String> {
        match kind(t).ok_or_else(|| format!("`{key}` has unknown value type {t}"))? {
            Kind::Fixed(n) => {
                let mut b = [0u8; 8];
                let n = n as usize;
                self.r
                    .read_exact(&mut b[..n])
                    .map_err(|e| format!("`{key}`: {e}"))?;
                let v = u64::from_le_bytes(b);
                // Only the integer types carry an alignment.
                Ok(matches!(t, 0..=5 | 10 | 11).then_some(v))
            }
            Kind::String => {
                let n = self.length().map_err(|e| format!("`{key}`: {e}"))?;
                self.skip(n, &format!("`{key}`"))?;
                Ok(None)
            }
            Kind::Array => {
                if depth >= MAX_DEPTH {
                    return Err(format!("`{key}` nests arrays deeper than {MAX_DEPTH}"));
                }
                let et = self.u32().map_err(|e| format!("`{key}`: {e}"))?;
                let n = self.length().map_err(|e| format!("`{key}`: {e}"))?;
                let min = match kind(et) {
                    Some(Kind::Fixed(s)) => s,
                    Some(Kind::String) => 4 + 4 * self.wide as u64,
                    Some(Kind::Array) => 8 + 4 * self.wide as u64,
                    None => return Err(format!("`{key}` holds unknown value type {et}")),
                };
                let left = self.remaining().map_err(|e| e.to_string())?;
                if n.saturating_mul(min) > left {
                    return Err(format!(
                        "`{key}`: an array of {n} values cannot fit the {left} bytes left"
                    ));
                }
                if let Kind::Fixed(s) = kind(et).unwrap_or(Kind::Fixed(1)) {
                    self.skip(n * s, &format!("`{key}`"))?;
                } else {
                    for _ in 0..n {
                        self.value(et, key, depth + 1)?;
                    }
                }
                Ok(None)
            }
        }
    }
}

/// Walk the header and metadata of the GGUF file `path`, bounded by its length, and
/// refuse what candle would panic on (a zero `general.alignment`).
pub fn check_metadata(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut w = Walker {
        r: std::io::BufReader::new(f),
        len,
        wide: true,
    };
    walk(&mut w).map_err(|why| Error::format(path, format!("not a valid GGUF file: {why}")))
}

fn walk<R: Read + Seek>(w: &mut Walker<R>) -> std::result::Result<(), String> {
    let short = |e: std::io::Error| format!("header: {e}");
    let magic = w.u32().map_err(short)?;
    if magic != 0x4655_4747 && magic != 0x4747_5546 {
        return Err(format!("unknown magic 0x{magic:08x}"));
    }
    let version = w.u32().map_err(short)?;
    w.wide = match version {
        1 => false,
        2 | 3 => true,
        v => return Err(format!("unsupported version {v}")),
    };
    let _tensors = w.length().map_err(short)?;
    let kvs = w.length().map_err(short)?;
    for i in 0..kvs {
        let key = w.string(&format!("metadata entry {i}"))?;
        let key = String::from_utf8_lossy(&key).into_owned();
        let t = w.u32().map_err(|e| format!("`{key}`: {e}"))?;
        let v = w.value(t, &key, 0)?;
        if key == "general.alignment" && v == Some(0) {
            return Err("`general.alignment` is 0".into());
        }
    }
    Ok(())
}

/// Every tensor of `content` lies inside the file of `len` bytes, with a size that fits
/// the arithmetic candle does on it.
pub fn check_tensors(path: &Path, content: &Content, len: u64) -> Result<()> {
    for (name, t) in &content.tensor_infos {
        let bad = |why: String| Error::format(path, format!("GGUF tensor `{name}`: {why}"));
        let dims = t.shape.dims();
        let elems = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .ok_or_else(|| bad(format!("shape {dims:?} overflows")))?;
        // candle reads an empty tensor through a dangling, unaligned pointer (fuzz: gguf).
        if elems == 0 {
            return Err(bad(format!("shape {dims:?} has no elements")));
        }
        let block = t.ggml_dtype.block_size() as u64;
        if elems % block != 0 {
            return Err(bad(format!(
                "{elems} elements are not a whole number of {:?} blocks of {block}",
                t.ggml_dtype
            )));
        }
        let bytes = (elems / block)
            .checked_mul(t.ggml_dtype.type_size() as u64)
            .ok_or_else(|| bad(format!("shape {dims:?} overflows")))?;
        let end = content
            .tensor_data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(bytes));
        if end.is_none_or(|e| e > len) {
            return Err(bad(format!(
                "{bytes} bytes at offset {} run past the end of the file ({len} bytes)",
                content.tensor_data_offset.saturating_add(t.offset)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gguf(kvs: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(0x4655_4747u32.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend((kvs.len() as u64).to_le_bytes());
        for (k, t, v) in kvs {
            b.extend((k.len() as u64).to_le_bytes());
            b.extend(k.as_bytes());
            b.extend(t.to_le_bytes());
            b.extend(v);
        }
        b
    }

    fn check(bytes: &[u8]) -> std::result::Result<(), String> {
        let len = bytes.len() as u64;
        let mut w = Walker {
            r: std::io::Cursor::new(bytes),
            len,
            wide: true,
        };
        walk(&mut w)
    }

    #[test]
    fn a_zero_alignment_is_refused_and_others_pass() {
        let zero = gguf(&[("general.alignment", 4, 0u32.to_le_bytes().to_vec())]);
        assert!(check(&zero).unwrap_err().contains("alignment"));
        let ok = gguf(&[("general.alignment", 4, 32u32.to_le_bytes().to_vec())]);
        assert!(check(&ok).is_ok());
        // And candle parses what passes, into the same alignment.
        let c = Content::read(&mut std::io::Cursor::new(&ok)).unwrap();
        assert_eq!(c.tensor_data_offset % 32, 0);
    }

    #[test]
    fn lengths_beyond_the_file_are_refused() {
        let mut arr = 0u32.to_le_bytes().to_vec(); // u8 elements
        arr.extend((1u64 << 40).to_le_bytes());
        assert!(check(&gguf(&[("a", 9, arr)]))
            .unwrap_err()
            .contains("cannot fit"));
        let s = (1u64 << 40).to_le_bytes().to_vec();
        assert!(check(&gguf(&[("s", 8, s)])).unwrap_err().contains("bytes"));
        assert!(check(&gguf(&[("t", 99, vec![])]))
            .unwrap_err()
            .contains("unknown value type"));
    }

    #[test]
    fn nested_arrays_are_bounded() {
        // An array of one array of one array ... deeper than the limit.
        let mut v = Vec::new();
        for _ in 0..=MAX_DEPTH {
            v.extend(9u32.to_le_bytes());
            v.extend(1u64.to_le_bytes());
        }
        v.extend(0u32.to_le_bytes());
        v.extend(0u64.to_le_bytes());
        let e = check(&gguf(&[("deep", 9, v)])).unwrap_err();
        assert!(e.contains("deeper"), "{e}");
    }
}
