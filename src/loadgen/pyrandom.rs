//! Python's `random` module, the parts vLLM's file datasets use: `random.seed(int)`,
//! `random.shuffle` and `random.choice`. CPython's generator is MT19937 seeded by
//! `init_by_array` with the seed's 32-bit words; `shuffle` and `choice` draw through
//! `_randbelow` (rejection sampling on `getrandbits(n.bit_length())`). Reproducing them exactly is
//! what lets isobench pick the same ShareGPT prompts as `vllm bench serve` for the same seed.

const N: usize = 624;
const M: usize = 397;

pub struct PyRandom {
    mt: [u32; N],
    index: usize,
}

impl PyRandom {
    /// `random.seed(seed)` for a non-negative int (CPython takes the absolute value).
    pub fn new(seed: u64) -> PyRandom {
        // The seed's 32-bit words, least significant first; at least one (seed 0 → [0]).
        let key: Vec<u32> = if seed >> 32 == 0 {
            vec![seed as u32]
        } else {
            vec![seed as u32, (seed >> 32) as u32]
        };
        let mut r = PyRandom {
            mt: [0; N],
            index: N,
        };
        r.init_by_array(&key);
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..N {
            let prev = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.index = N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
        }
        self.mt[0] = 0x8000_0000;
    }

    fn genrand_u32(&mut self) -> u32 {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        if self.index >= N {
            for k in 0..N {
                let y = (self.mt[k] & UPPER) | (self.mt[(k + 1) % N] & LOWER);
                let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
                self.mt[k] = self.mt[(k + M) % N] ^ (y >> 1) ^ mag;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random.getrandbits(k)` for 1 ≤ k ≤ 64: 32-bit words, least significant first, the last
    /// one shifted down to its remaining bits.
    fn getrandbits(&mut self, k: u32) -> u64 {
        if k <= 32 {
            return u64::from(self.genrand_u32() >> (32 - k));
        }
        let low = u64::from(self.genrand_u32());
        let high = u64::from(self.genrand_u32() >> (64 - k));
        low | (high << 32)
    }

    /// `random._randbelow(n)` for n ≥ 1.
    pub fn randbelow(&mut self, n: usize) -> usize {
        let n = n as u64;
        let k = 64 - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r as usize;
            }
        }
    }

    /// `random.shuffle(items)`.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.randbelow(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from CPython 3.11:
    /// `random.seed(s); x = list(range(10)); random.shuffle(x)` and
    /// `random.seed(s); [random.getrandbits(32) for _ in range(3)]`.
    #[test]
    fn matches_cpython() {
        let mut r = PyRandom::new(0);
        let words: Vec<u64> = (0..3).map(|_| r.getrandbits(32)).collect();
        assert_eq!(words, PY_SEED0_WORDS);
        for (seed, expected) in PY_SHUFFLES {
            let mut x: Vec<u32> = (0..10).collect();
            PyRandom::new(seed).shuffle(&mut x);
            assert_eq!(x, expected, "seed {seed}");
        }
        let mut big: Vec<u32> = (0..1000).collect();
        PyRandom::new(1 << 40).shuffle(&mut big);
        assert_eq!(&big[..5], PY_BIG_SEED_HEAD);
        // `random.seed(3); [random.choice(range(7)) for _ in range(5)]`
        let mut r = PyRandom::new(3);
        let picks: Vec<usize> = (0..5).map(|_| r.randbelow(7)).collect();
        assert_eq!(picks, [1, 4, 4, 1, 2]);
    }

    const PY_SEED0_WORDS: [u64; 3] = [3626764237, 1654615998, 3255389356];
    const PY_SHUFFLES: [(u64, [u32; 10]); 4] = [
        (0, [7, 8, 1, 5, 3, 4, 2, 0, 9, 6]),
        (1, [6, 8, 9, 7, 5, 3, 0, 4, 1, 2]),
        (42, [7, 3, 2, 8, 5, 6, 9, 4, 0, 1]),
        (12345, [8, 7, 3, 5, 1, 2, 9, 4, 0, 6]),
    ];
    const PY_BIG_SEED_HEAD: [u32; 5] = [746, 886, 618, 550, 91];
}
