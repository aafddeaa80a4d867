# sweep.gp: a threshold sweep, one line per component (trace-outliers
# --sweep) or per metric (any table with a threshold column)
# (trace-plot sweep); also a per-layer mean of trace-quant's or trace-diff's
# table, one line per series (trace-plot quant, diff).
#
# trace-plot sets, before this template:
#   term_kind        png, svg, pdf or tex
#   small_font       ',SIZE': the font of the lines under the title
#   title_text, subtitle_text, xlabel_text, ylabel_text
#   logscale         axes to draw on a log scale ("" or e.g. "y")
#   data_file        one block per series (blocks apart by two blank lines,
#                    in the order of series_names): threshold, value
#   series_names, series_colors   arrays: the series and their colours
#   x_step           (quant, diff) the step between x tics: whole layers

# the title and a subtitle under it, placed in character heights from the
# top so that they stay apart at any --size
set label 1 title_text noenhanced at screen 0.5, screen 1 offset 0, char -1.3 center
small_text = term_kind eq "tex" ? '\footnotesize ' : ""
set label 2 small_text.subtitle_text noenhanced at screen 0.5, screen 1 offset 0, char -2.7 center \
	font small_font
set xlabel xlabel_text noenhanced
set ylabel ylabel_text noenhanced
set tmargin 5

set grid xtics ytics lc rgb "#d8d8d8"
set xtics out nomirror
# layers on the x axis (trace-plot quant, diff): whole steps
if (exists("x_step")) { set xtics x_step }
set ytics out nomirror
if (strstrt(logscale, "x")) { set logscale x }
if (strstrt(logscale, "y")) { set logscale y }
set key outside right top vertical reverse Left samplen 2 spacing 1.2

# the total, when there is one, thick and black
plot for [i = 1:|series_names|] data_file index (i - 1) using 1:2 with linespoints \
	lw (series_names[i] eq "total" ? 3 : 1.5) pt 7 ps 0.6 lc rgb series_colors[i] \
	title series_names[i] noenhanced
