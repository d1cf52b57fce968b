// Package bench holds the plugin-boundary benchmarks (issue 6): every figure
// is measured beside its baseline in the same run, and scripts/bench.sh turns
// the results into BENCHMARKS.md. The package has no code of its own; the
// benchmarks are in its _test.go files and the fixture plugins they build at
// test time are in testdata/.
package bench
