//! The trace of video reads shared by `--bench eviction` (the policy study, simulated) and `--bench cache`
//! (the real caches): a catalogue of objects, Zipf(α) object popularity, and reads the way players make
//! them — from the start with probability `p_start0`, else from a uniform byte offset (a seek), for a
//! geometric number of blocks. Deterministic: a splitmix64 generator and an exact inverse-CDF Zipf
//! sampler, so the same seed gives the same trace on every machine and for every cache.

/// splitmix64 (Steele, Lea, Flood 2014): a small, well-mixed 64-bit generator.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n) (n > 0); the modulo bias is below 2^-40 for the n used here.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }
}

/// Zipf(α) over ranks 0..n: P(rank k) ∝ 1 / (k + 1)^α, sampled by binary search in the exact CDF.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, alpha: f64) -> Zipf {
        assert!(n > 0 && alpha >= 0.0, "Zipf needs n > 0 and α >= 0");
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(alpha);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut SplitMix) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// Object sizes, uniform in [min, max] bytes (inclusive), object `i` of the catalogue at index `i`.
pub fn catalogue(n: usize, min: u64, max: u64, seed: u64) -> Vec<u64> {
    assert!(0 < min && min <= max, "object sizes need 0 < min <= max");
    let mut rng = SplitMix::new(seed);
    (0..n).map(|_| min + rng.below(max - min + 1)).collect()
}

/// How players read: the shape of one trace.
#[derive(Clone, Copy)]
pub struct Shape {
    pub alpha: f64,
    pub block: u64,
    /// Probability that a read starts at byte 0 (a play from the start); else a uniform seek.
    pub p_start0: f64,
    /// Mean read length in blocks (geometric, at least one block).
    pub mean_blocks: f64,
}

impl Shape {
    /// The study's default: α given, 1 MiB blocks, half the reads from the start, ~8 blocks each.
    pub fn video(alpha: f64) -> Shape {
        Shape {
            alpha,
            block: 1 << 20,
            p_start0: 0.5,
            mean_blocks: 8.0,
        }
    }
}

/// One read: bytes [start, start + len) of object `obj` (never past its end, never empty).
#[derive(Clone, Copy, Debug)]
pub struct Read {
    pub obj: usize,
    pub start: u64,
    pub len: u64,
}

/// `count` reads over the objects of `sizes` (ranked by index: object 0 is the most popular).
pub fn reads(sizes: &[u64], shape: Shape, count: usize, seed: u64) -> Vec<Read> {
    assert!(shape.mean_blocks >= 1.0, "mean read length below one block");
    let zipf = Zipf::new(sizes.len(), shape.alpha);
    let mut rng = SplitMix::new(seed);
    // Geometric on {1, 2, ...} with mean m: success probability 1/m.
    let q = 1.0 - 1.0 / shape.mean_blocks;
    (0..count)
        .map(|_| {
            let obj = zipf.sample(&mut rng);
            let size = sizes[obj];
            let start = if rng.unit() < shape.p_start0 {
                0
            } else {
                rng.below(size)
            };
            let blocks = if q <= 0.0 {
                1
            } else {
                1 + ((1.0 - rng.unit()).ln() / q.ln()).floor() as u64
            };
            let len = (blocks * shape.block).min(size - start);
            Read { obj, start, len }
        })
        .collect()
}
