/* An import module without WASI: exports mul(a, b). Built with --no-entry, so it has no _start. */
__attribute__((export_name("mul"))) int mul(int a, int b) { return a * b; }
