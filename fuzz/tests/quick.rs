//! The quick, bounded fuzz run (stable Rust, part of scripts/test through
//! spec/reliability/50-fuzz_quick_spec.lua): every target over its seed
//! corpus (`fuzz/corpus/<target>/`), then fixed-seed generated inputs —
//! JSON-shaped ones for the config targets, random bytes and mutations of
//! the corpus for all. `KONG_RS_FUZZ_CASES` sets the generated inputs per
//! target (default 100,000); `KONG_RS_FUZZ_SEED` the seed.

use std::path::Path;
use std::time::Instant;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const KEYS: &[&str] = &[
    "message",
    "deny_status",
    "path",
    "reopen",
    "x",
    "",
    "message\0",
];
const STRINGS: &[&str] = &[
    "",
    "hi",
    "/tmp/kong-rs-fuzz.log",
    "relative",
    "/",
    "/tmp/dir/",
    "a\r\nb",
    "\u{0}",
    "\u{7f}",
    "caf\u{e9}",
    "\u{1F980}",
    "\\ud800",
];

/// A random JSON value biased toward the configs' shapes.
fn json(rng: &mut Rng, depth: usize) -> String {
    match rng.below(if depth > 4 { 4 } else { 7 }) {
        0 => format!("{:?}", rng.pick(STRINGS)),
        1 => {
            let n: i64 = match rng.below(4) {
                0 => 400 + rng.below(200) as i64,
                1 => rng.next() as i64,
                2 => -(rng.below(1000) as i64),
                _ => rng.below(70000) as i64,
            };
            if rng.below(5) == 0 {
                format!("{n}.5")
            } else {
                n.to_string()
            }
        }
        2 => rng
            .pick(&["true", "false", "null", "1e999", "-0"])
            .to_string(),
        3 => format!("\"{}\"", "a".repeat(rng.below(5000))),
        4 | 5 => {
            let fields: Vec<String> = (0..rng.below(4))
                .map(|_| format!("{:?}:{}", rng.pick(KEYS), json(rng, depth + 1)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        _ => {
            let items: Vec<String> = (0..rng.below(3)).map(|_| json(rng, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..=rng.below(8) {
        match rng.below(4) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            1 => {
                let i = rng.below(out.len() + 1);
                let n = rng.below(16);
                let extra = rng.bytes(n);
                out.splice(i..i, extra);
            }
            2 if !out.is_empty() => {
                let i = rng.below(out.len());
                let j = (i + rng.below(16)).min(out.len());
                out.drain(i..j);
            }
            _ => {
                let i = rng.below(out.len() + 1);
                let piece = rng.pick(STRINGS).as_bytes().to_vec();
                out.splice(i..i, piece);
            }
        }
    }
    out
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

#[test]
fn every_target_survives_its_corpus_and_generated_inputs() {
    let cases: usize = std::env::var("KONG_RS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("KONG_RS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x006b_6f6e_672d_7273);
    // A failing input is printed by the panic message of the target; the
    // target name and case number are printed here first.
    for (name, target) in kong_rs_fuzz::TARGETS {
        let started = Instant::now();
        let seeds = corpus(name);
        assert!(!seeds.is_empty(), "no seed corpus for {name}");
        for input in &seeds {
            target(input);
        }
        let mut rng = Rng(seed ^ name.len() as u64 ^ 0x9E37_79B9_7F4A_7C15);
        for case in 0..cases {
            let input = match case % 3 {
                0 if name.starts_with("config") => json(&mut rng, 0).into_bytes(),
                0 | 1 => {
                    let cap = if rng.below(10) == 0 { 4096 } else { 256 };
                    let len = rng.below(cap);
                    rng.bytes(len)
                }
                _ => {
                    let base = rng.pick(&seeds).clone();
                    mutate(&mut rng, &base)
                }
            };
            let result = std::panic::catch_unwind(|| target(&input));
            if result.is_err() {
                panic!("{name}: case {case} (seed {seed}) crashed on input {input:?}");
            }
        }
        println!(
            "fuzz quick: {name}: {} corpus + {cases} generated inputs, no crash, {:.2} s",
            seeds.len(),
            started.elapsed().as_secs_f64()
        );
    }
    kong_rs_fuzz::remove_temp_files();
    let mut unreached = Vec::new();
    for (branch, count) in kong_rs_fuzz::reached::all() {
        println!("fuzz quick: reached {branch}: {count}");
        if count == 0 {
            unreached.push(branch);
        }
    }
    // The valid-JSON branch needs the seed document: only required when the
    // corpus run reached it (it always does with the shipped corpus).
    assert!(
        unreached.is_empty(),
        "branches never reached: {unreached:?}"
    );
}
