# plot.gp: render the spread of updates written by `statemesh-sim --csv FILE`.
# Usage: gnuplot -e "csv='spread.csv'; out='convergence.png'; title='...'" sim/plot.gp
# The CSV has a header and rows update,t_ms,fraction grouped by update; each update
# is drawn as one line: the fraction of live nodes holding it against the time
# since it was written. At most `maxu` updates are drawn (default 50).
if (!exists("csv")) csv = 'spread.csv'
if (!exists("out")) out = 'convergence.png'
if (!exists("title")) title = 'statemesh-sim: spread of each update'
if (!exists("maxu")) maxu = 50
set terminal pngcairo size 900,540 noenhanced font ",10"
set output out
set datafile separator ','
set key off
set grid
set title title
set xlabel 'virtual time since the write (ms)'
set ylabel 'fraction of live nodes holding the update'
set yrange [0:1.02]
# awk puts a blank line between updates so each one is its own polyline
blocks = sprintf("< awk -F, 'NR > 1 && $1 < %d { if (NR > 2 && $1 != p) print \"\"; print; p = $1 }' '%s'", maxu, csv)
plot blocks using 2:3:(int($1) * 7 % 16) with lines lw 1 lc variable
