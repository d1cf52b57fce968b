package pluginsdk

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"sort"
	"strings"
	"testing"
)

// TestSurfaceIsSmall keeps the author's package to what an author needs:
// Serve, its options, the log handler and the version and environment
// constants. Everything else lives in internal/wire.
func TestSurfaceIsSmall(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			for name, obj := range f.Scope.Objects {
				if ast.IsExported(name) && obj.Kind != ast.Bad {
					names = append(names, name)
				}
			}
		}
	}
	sort.Strings(names)
	want := "DebugEnv KeepOnHostExit LogLevelEnv NewLogHandler Option ProtocolVersion SDKVersion Serve"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("exported names: %s; want %s (at most 8: move host plumbing to internal/wire)", got, want)
	}
}
