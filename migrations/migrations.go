// Package migrations embeds creditgate's SQL migrations. Files are applied by
// bun's migrator in name order; a landed file is never edited, only followed by
// a new one.
package migrations

import (
	"embed"
	"io/fs"
)

//go:embed *.sql
var files embed.FS

// FS returns the embedded migration files.
func FS() fs.FS { return files }
