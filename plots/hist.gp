# hist.gp: the |x| histogram of one point or one channel, log-log
# (trace-plot hist).
#
# trace-plot sets, before this template:
#   term_kind        png, svg, pdf or tex
#   small_font       ',SIZE': the font of the lines under the title
#   title_text, subtitle_text, xlabel_text, ylabel_text
#   logscale         axes to draw on a log scale ("xy" by default)
#   data_file        one row per nonempty bin: lower edge, upper edge, count

bar_color = "#4c72b0"

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
set ytics out nomirror
set style fill solid 0.85 border lc rgb "#60000000"
# bars stand on 0, or on 1/2 where a log axis has no 0 (every count is >= 1)
bar_base = 0
log_format = term_kind eq "tex" ? '$10^{%L}$' : "10^{%L}"
if (strstrt(logscale, "x")) { set logscale x; set format x log_format }
if (strstrt(logscale, "y")) { set logscale y; set format y log_format; bar_base = 0.5 }
set yrange [bar_base:*]
unset key

# each bin its own box between its edges: the bins are log-spaced
plot data_file using (sqrt($1 * $2)):3:1:2:(bar_base):3 with boxxyerror fc rgb bar_color
