module github.com/jtarchie/pocketci

go 1.26
