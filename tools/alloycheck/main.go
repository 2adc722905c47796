// alloycheck checks config.alloy files with Alloy's own syntax module (github.com/grafana/alloy/syntax,
// the parser and evaluator Alloy loads its configuration with) against the arguments and exports of
// the components, as Alloy v1.5.0's reference documents them (components.go).
//
// Usage: alloycheck FILE...   Prints each problem as FILE:LINE:COL: message; exit status 1 if any.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: alloycheck FILE...")
		os.Exit(2)
	}
	failed := false
	for _, name := range os.Args[1:] {
		src, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		found := Check(name, src)
		for _, p := range found {
			fmt.Println(p)
		}
		if len(found) > 0 {
			failed = true
		} else {
			fmt.Printf("%s: ok\n", name)
		}
	}
	if failed {
		os.Exit(1)
	}
}
