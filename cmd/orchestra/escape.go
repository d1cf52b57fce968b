package main

import (
	"strconv"
	"strings"
	"unicode"
)

// escape makes a string from a plugin safe to print on a terminal: control
// characters (escape sequences, newlines, carriage returns) and invalid
// UTF-8 are shown quoted, as Go would write them, so they cannot forge rows
// or recolour the screen. --json prints the raw strings.
func escape(s string) string {
	clean := true
	for _, r := range s {
		if r == unicode.ReplacementChar || unicode.IsControl(r) || (r >= 0x80 && !unicode.IsPrint(r) && !unicode.IsSpace(r)) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return strings.ReplaceAll(q[1:len(q)-1], `\"`, `"`)
}
