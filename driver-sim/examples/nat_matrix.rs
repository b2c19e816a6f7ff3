//! Prints the NAT traversal matrix: every pair of NAT kinds in the
//! simulator (realistic latencies, 1 % loss), the path each pair ends on,
//! the time to the first datagram and to a direct path, and the probes
//! sent; birthday pairs over 20 seeds with their success rate. The same
//! table is snapshotted by the `nat_matrix` test.
//!
//! `cargo run --release -p driver-sim --example nat_matrix`

#[path = "../tests/nat_matrix.rs"]
#[allow(dead_code)]
mod nat_matrix;

fn main() {
    print!("{}", nat_matrix::matrix());
}
