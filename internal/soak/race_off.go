//go:build !race

package soak

// RaceEnabled reports whether this binary was built with -race; Build then
// builds the daemon with -race too.
const RaceEnabled = false
