module github.com/jtarchie/pocketci/plugins/qemu

go 1.26

require github.com/jtarchie/pocketci v0.0.0

replace github.com/jtarchie/pocketci => ../..
