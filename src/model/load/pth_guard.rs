//! A PyTorch `.pth` checkpoint read as data, never as code.
//!
//! A `.pth` file is a zip holding a pickle (`*/data.pkl`) and one entry per storage.
//! candle's pickle reader interprets no code, but it trusts the pickle: it nests without
//! bound (a deep pickle overflows the stack), copies memoised objects on every reference
//! (a few bytes can expand exponentially), sizes strings from their length prefix, and
//! sizes a tensor from the shape the pickle states. So before candle sees a file,
//! [`check_pickles`] walks every pickle and admits only the opcodes a state dict needs,
//! the globals on [`ALLOWED_GLOBALS`] (anything else is refused by name), bounded nesting
//! and bounded expansion; after, [`check_storages`] checks every tensor against the bytes
//! of its storage entry.
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// The globals a `torch.save`d state dict refers to: the dict type, the tensor and
/// parameter rebuilders, and the storage types. Everything here is a constructor candle
/// interprets as data; nothing is imported or called.
pub const ALLOWED_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ShortStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
    ("__torch__", "Module"),
];

/// Containers nest no deeper than this; a state dict nests about six levels.
pub const MAX_DEPTH: u32 = 100;

/// What a pickle may build, in units of objects plus string bytes, per byte of pickle:
/// memo references copy objects, and a state dict copies only small ones.
const EXPANSION: u64 = 16;
const EXPANSION_SLACK: u64 = 1 << 16;

/// One stack entry of the walk: how deep it nests and how much it holds.
#[derive(Clone, Copy)]
struct Obj {
    depth: u32,
    size: u64,
}

enum Slot {
    Mark,
    Obj(Obj),
}

struct Walk<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, Obj>,
    max_size: u64,
}

type Why = String;

impl Walk<'_> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&[u8], Why> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "{what} at byte {} runs past the end of the pickle",
                    self.pos
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn line(&mut self) -> std::result::Result<String, Why> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("an unterminated GLOBAL name at byte {}", self.pos))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    /// A memo index: one byte (BINPUT, BINGET) or four (the LONG_ forms).
    fn memo_id(&mut self, short: bool) -> std::result::Result<u32, Why> {
        Ok(if short {
            u32::from(self.take(1, "a memo index")?[0])
        } else {
            let b = self.take(4, "a memo index")?;
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })
    }
    fn push(&mut self, o: Obj) -> std::result::Result<(), Why> {
        if o.depth > MAX_DEPTH {
            return Err(format!("objects nest deeper than {MAX_DEPTH} levels"));
        }
        if o.size > self.max_size {
            return Err(format!(
                "memo references expand the pickle beyond {} objects",
                self.max_size
            ));
        }
        self.stack.push(Slot::Obj(o));
        Ok(())
    }
    fn pop(&mut self) -> std::result::Result<Obj, Why> {
        match self.stack.pop() {
            Some(Slot::Obj(o)) => Ok(o),
            _ => Err(format!(
                "an opcode at byte {} pops an empty stack",
                self.pos
            )),
        }
    }
    fn pop_to_mark(&mut self) -> std::result::Result<Vec<Obj>, Why> {
        let mut out = Vec::new();
        loop {
            match self.stack.pop() {
                Some(Slot::Obj(o)) => out.push(o),
                Some(Slot::Mark) => return Ok(out),
                None => return Err(format!("no MARK before byte {}", self.pos)),
            }
        }
    }
    /// A container holding `parts`.
    fn of(parts: &[Obj]) -> Obj {
        Obj {
            depth: 1 + parts.iter().map(|o| o.depth).max().unwrap_or(0),
            size: parts.iter().fold(1u64, |a, o| a.saturating_add(o.size)),
        }
    }
    /// Add `parts` into the container on top of the stack.
    fn extend_top(&mut self, parts: &[Obj]) -> std::result::Result<(), Why> {
        let top = self.pop()?;
        let mut all = parts.to_vec();
        all.push(Obj {
            depth: top.depth.saturating_sub(1),
            size: top.size.saturating_sub(1),
        });
        let o = Self::of(&all);
        self.push(o)
    }

    fn run(&mut self) -> std::result::Result<(), Why> {
        const ATOM: Obj = Obj { depth: 0, size: 1 };
        loop {
            let at = self.pos;
            let op = *self.take(1, "an opcode")?.first().unwrap_or(&0);
            match op {
                0x80 => {
                    self.take(1, "PROTO")?;
                }
                b'c' => {
                    let (module, name) = (self.line()?, self.line()?);
                    if !ALLOWED_GLOBALS.contains(&(module.as_str(), name.as_str())) {
                        return Err(format!(
                            "the pickle refers to the global `{module}.{name}` (byte {at}), \
                             which a state dict never needs; refused, since headcode reads \
                             checkpoints as data and runs no pickle code"
                        ));
                    }
                    self.push(ATOM)?;
                }
                b'X' => {
                    let n = u32::from_le_bytes(
                        self.take(4, "BINUNICODE")?.try_into().unwrap_or_default(),
                    );
                    self.take(n as usize, "a BINUNICODE string")?;
                    self.push(Obj {
                        depth: 0,
                        size: 1 + u64::from(n),
                    })?;
                }
                b'K' | b'M' | b'J' | b'G' | b'N' | 0x88 | 0x89 => {
                    let n = match op {
                        b'K' => 1,
                        b'M' => 2,
                        b'J' => 4,
                        b'G' => 8,
                        _ => 0,
                    };
                    self.take(n, "an integer or float")?;
                    self.push(ATOM)?;
                }
                0x8a => {
                    let n = *self.take(1, "LONG1")?.first().unwrap_or(&0);
                    self.take(n as usize, "LONG1")?;
                    self.push(ATOM)?;
                }
                b')' | b']' | b'}' | b'd' => self.push(ATOM)?,
                b'(' => self.stack.push(Slot::Mark),
                b't' => {
                    let parts = self.pop_to_mark()?;
                    self.push(Self::of(&parts))?;
                }
                0x85..=0x87 => {
                    let parts = (0..op - 0x84)
                        .map(|_| self.pop())
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    self.push(Self::of(&parts))?;
                }
                // REDUCE, BUILD, NEWOBJ: two operands into one object.
                b'R' | b'b' | 0x81 => {
                    let (a, b) = (self.pop()?, self.pop()?);
                    self.push(Self::of(&[a, b]))?;
                }
                b'Q' => {
                    let id = self.pop()?;
                    self.push(Self::of(&[id]))?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top(&[v])?;
                }
                b's' => {
                    let (v, k) = (self.pop()?, self.pop()?);
                    self.extend_top(&[k, v])?;
                }
                b'e' | b'u' => {
                    let parts = self.pop_to_mark()?;
                    self.extend_top(&parts)?;
                }
                b'q' | b'r' => {
                    let id = self.memo_id(op == b'q')?;
                    let top = match self.stack.last() {
                        Some(Slot::Obj(o)) => *o,
                        _ => return Err(format!("a memo PUT at byte {at} with nothing to store")),
                    };
                    self.memo.insert(id, top);
                }
                b'h' | b'j' => {
                    let id = self.memo_id(op == b'h')?;
                    let o = *self
                        .memo
                        .get(&id)
                        .ok_or_else(|| format!("a memo GET of {id} at byte {at}, never stored"))?;
                    self.push(o)?;
                }
                b'.' => return Ok(()),
                other => {
                    return Err(format!(
                        "opcode 0x{other:02x} at byte {at} is not one a state dict needs"
                    ))
                }
            }
        }
    }
}

/// Walk one pickle; `Err` says why it is refused.
pub fn check_pickle(data: &[u8]) -> std::result::Result<(), String> {
    let mut w = Walk {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        max_size: (data.len() as u64)
            .saturating_mul(EXPANSION)
            .saturating_add(EXPANSION_SLACK),
    };
    w.run()
}

fn open(path: &Path) -> Result<zip::ZipArchive<std::io::BufReader<std::fs::File>>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    zip::ZipArchive::new(std::io::BufReader::new(f))
        .map_err(|e| Error::format(path, format!("not a PyTorch checkpoint (zip): {e}")))
}

/// Walk every `data.pkl` of the checkpoint at `path` (see the module's doc).
pub fn check_pickles(path: &Path) -> Result<()> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    let mut z = open(path)?;
    for i in 0..z.len() {
        let mut entry = z
            .by_index(i)
            .map_err(|e| Error::format(path, format!("zip entry {i}: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| Error::format(path, format!("zip entry {i}: {e}")))?
            .into_owned();
        if !name.ends_with("data.pkl") {
            continue;
        }
        // candle reads stored entries only, so an entry holds no more than the file.
        if entry.size() > len {
            return Err(Error::format(
                path,
                format!("`{name}` claims {} bytes, more than the file", entry.size()),
            ));
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| Error::format(path, format!("`{name}`: {e}")))?;
        check_pickle(&data).map_err(|why| Error::format(path, format!("`{name}`: {why}")))?;
    }
    Ok(())
}

/// Every tensor candle found lies inside its storage entry: its offset and extent, at
/// its dtype's size, within the entry's bytes.
pub fn check_storages(path: &Path, pth: &candle_core::pickle::PthTensors) -> Result<()> {
    let mut z = open(path)?;
    let mut sizes: HashMap<String, u64> = HashMap::new();
    for i in 0..z.len() {
        if let Ok(e) = z.by_index(i) {
            if let Ok(n) = e.name() {
                sizes.insert(n.into_owned(), e.size());
            }
        }
    }
    for (name, t) in pth.tensor_infos() {
        let bad = |why: String| Error::format(path, format!("tensor `{name}`: {why}"));
        let have = *sizes
            .get(&t.path)
            .ok_or_else(|| bad(format!("its storage `{}` is not in the archive", t.path)))?;
        let dims = t.layout.dims();
        let need = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .and_then(|e| e.checked_add(t.layout.start_offset() as u64))
            .and_then(|e| e.checked_mul(t.dtype.size_in_bytes() as u64))
            .ok_or_else(|| bad(format!("shape {dims:?} overflows")))?;
        if need > have {
            return Err(bad(format!(
                "shape {dims:?} needs {need} bytes, but its storage `{}` holds {have}",
                t.path
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_state_dicts_pass() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for f in ["attn_only_tiny", "attn_only_shortformer_tiny"] {
            check_pickles(&root.join(f).join("model.pth")).unwrap();
        }
    }

    #[test]
    fn code_is_refused_by_name() {
        // pickle.dumps of os.system("true") as protocol 2: GLOBAL 'posix system'.
        let p = b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.";
        let e = check_pickle(p).unwrap_err();
        assert!(e.contains("posix.system"), "{e}");
        // An opcode outside the state-dict set (INST).
        assert!(check_pickle(b"\x80\x02(ios\nsystem\n.")
            .unwrap_err()
            .contains("0x69"));
    }

    #[test]
    fn deep_nesting_and_memo_bombs_are_refused() {
        let mut deep = vec![0x80, 2, b']'];
        deep.extend([0x85; 200]); // TUPLE1 around the top, 200 deep
        deep.push(b'.');
        assert!(check_pickle(&deep).unwrap_err().contains("deeper"));

        // x = (); repeat: x = (x, x) via memo — doubles each round.
        let mut bomb = vec![0x80, 2, b')', b'q', 0];
        for _ in 0..40 {
            bomb.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        bomb.push(b'.');
        let e = check_pickle(&bomb).unwrap_err();
        assert!(e.contains("expand") || e.contains("deeper"), "{e}");

        // A string longer than the pickle.
        let e = check_pickle(b"\x80\x02X\xff\xff\xff\x7f.").unwrap_err();
        assert!(e.contains("past the end"), "{e}");
    }
}
