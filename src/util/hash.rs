//! Content hashes: blake3, printed as `b3:` + 32 hex characters (128 bits are plenty for keys).
use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 16]);

impl Hash {
    pub fn of(bytes: &[u8]) -> Hash {
        Hash::from_blake3(blake3::hash(bytes))
    }

    fn from_blake3(h: blake3::Hash) -> Hash {
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.as_bytes()[..16]);
        Hash(out)
    }

    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(35);
        s.push_str("b3:");
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Builds a hash from labelled parts; labels and lengths are framed so that
/// ("ab","c") and ("a","bc") never collide.
pub struct Hasher(blake3::Hasher);

impl Default for Hasher {
    fn default() -> Self {
        Hasher(blake3::Hasher::new())
    }
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }

    pub fn field(&mut self, label: &str, value: &str) -> &mut Hasher {
        self.0.update(&(label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update(&(value.len() as u64).to_le_bytes());
        self.0.update(value.as_bytes());
        self
    }

    pub fn hash(&mut self, label: &str, value: &Hash) -> &mut Hasher {
        self.0.update(&(label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update(&value.0);
        self
    }

    pub fn finish(&self) -> Hash {
        Hash::from_blake3(self.0.finalize())
    }
}

/// Hash of a file's bytes, streamed.
pub fn file_hash(path: &std::path::Path) -> std::io::Result<Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(Hash::from_blake3(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_prevents_collisions() {
        let a = Hasher::new().field("x", "ab").field("y", "c").finish();
        let b = Hasher::new().field("x", "a").field("y", "bc").finish();
        assert_ne!(a, b);
        assert_eq!(a, Hasher::new().field("x", "ab").field("y", "c").finish());
        assert_eq!(a.hex().len(), 35);
    }
}
