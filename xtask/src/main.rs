fn main() {
    println!("observability-stack xtask: under construction");
}
