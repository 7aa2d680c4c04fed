//go:build !linux

package main

import "context"

func stopWithParent() {}

// watchParent needs /proc; elsewhere make's signals reach dev only as the
// terminal sends them (Ctrl-C) or as make passes them on (SIGTERM).
func watchParent(context.Context, context.CancelCauseFunc) {}

// stopStrays needs /proc; elsewhere a leftover webhook shows as its port in use.
func stopStrays(context.Context, string) []int { return nil }

// listener needs /proc.
func listener(int) string { return "" }
