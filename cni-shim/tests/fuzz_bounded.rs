//! A bounded, deterministic stand-in for the cargo-fuzz target (which needs nightly; see
//! `fuzz/README.md`): a few thousand mutated inputs through the same entry point,
//! `config::parse_fuzz_input`. Every input must give a parsed invocation or a CNI error with a spec
//! code and a message, never a panic.

use enipool_cni::config::parse_fuzz_input;
use std::panic;

const ITERATIONS: usize = 6000;

/// xorshift64*: deterministic, so a failure reproduces from the printed iteration.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/parse_invocation");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("fuzz corpus")
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    seeds.push(b"CNI_COMMAND=DEL\nCNI_CONTAINERID=a\nCNI_IFNAME=eth0\n\0{\"cniVersion\":\"0.3.1\",\"name\":\"n\"}".to_vec());
    seeds.push(
        b"CNI_COMMAND=STATUS\n\0{\"cniVersion\":\"1.1.0\",\"name\":\"n\",\"agentSocket\":\"/x\"}"
            .to_vec(),
    );
    seeds
}

/// Tokens that tend to reach deeper code paths when spliced in.
const DICT: &[&[u8]] = &[
    b"\"cniVersion\"",
    b"\"1.1.0\"",
    b"\"0.2.0\"",
    b"\"name\"",
    b"\"ipam\"",
    b"\"mtu\"",
    b"-1",
    b"99999999999999999999",
    b"null",
    b"[]",
    b"{}",
    b"\"prevResult\"",
    b"\"ips\"",
    b"\"address\"",
    b"\"10.0.0.1/33\"",
    b"\"interface\"",
    b"\"capabilities\"",
    b"{\"ips\":true}",
    b"\"timeoutMs\"",
    b"0",
    b"\"cni.dev/valid-attachments\"",
    b"CNI_COMMAND=",
    b"CNI_IFNAME=..\n",
    b"CNI_ARGS=a;b\n",
    b"\\u0000",
    b"\xff",
    b"\"",
    b",",
    b":",
    b"\n",
    b"\0",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input.truncate(i);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(len - i + 1).min(16);
                input.drain(i..i + n);
            }
            3 => {
                let i = rng.below(len + 1);
                let tok = DICT[rng.below(DICT.len())];
                input.splice(i..i, tok.iter().copied());
            }
            4 => {
                let i = rng.below(len + 1);
                let b = rng.next() as u8;
                input.insert(i, b);
            }
            _ if len > 1 => {
                // Duplicate a slice: nests brackets and repeats keys.
                let a = rng.below(len);
                let b = a + rng.below(len - a).min(64);
                let chunk = input[a..b].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            _ => {}
        }
    }
}

#[test]
fn mutated_inputs_never_panic_and_errors_carry_spec_codes() {
    let seeds = seeds();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let (mut ok, mut errs) = (0, 0);
    for i in 0..ITERATIONS {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut input);
        let result = panic::catch_unwind(|| parse_fuzz_input(&input));
        let result = result.unwrap_or_else(|_| {
            panic!("iteration {i} panicked on {:?}", String::from_utf8_lossy(&input))
        });
        match result {
            Ok(_) => ok += 1,
            Err(e) => {
                errs += 1;
                assert!(matches!(e.code(), 1..=7 | 11), "iteration {i}: code {} for {e}", e.code());
                assert!(!e.to_string().is_empty());
                serde_json::to_string(&e.to_reply("1.0.0")).unwrap();
            }
        }
    }
    // The mutator must exercise both outcomes, or it is not testing much.
    assert!(ok > 50 && errs > 50, "ok={ok} errs={errs}");
}

#[test]
fn oversized_fuzz_input_is_a_decoding_failure() {
    let mut input = b"CNI_COMMAND=ADD\n\0".to_vec();
    input.resize(input.len() + (1 << 20) + 1, b' ');
    assert_eq!(parse_fuzz_input(&input).unwrap_err().code(), 6);
}
