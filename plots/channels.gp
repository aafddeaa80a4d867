# channels.gp: one point's per-channel statistic as a profile, outlier
# channels in red (trace-plot channels).
#
# trace-plot sets, before this template:
#   term_kind        png, svg, pdf or tex
#   small_font       ',SIZE': the font of the lines under the title
#   title_text, subtitle_text, xlabel_text, ylabel_text
#   logscale         axes to draw on a log scale ("" or e.g. "y")
#   data_file        one row per channel with values: channel, value,
#                    outlier (1 for an outlier channel)
#   channels         the point's channel count

bar_color = "#4c72b0"
outlier_color = "#d62728"

# the title and a subtitle under it, placed in character heights from the
# top so that they stay apart at any --size
set label 1 title_text noenhanced at screen 0.5, screen 1 offset 0, char -1.3 center
small_text = term_kind eq "tex" ? '\footnotesize ' : ""
set label 2 small_text.subtitle_text noenhanced at screen 0.5, screen 1 offset 0, char -2.7 center \
	font small_font
set xlabel xlabel_text noenhanced
set ylabel ylabel_text noenhanced
set tmargin 5

set grid ytics lc rgb "#d8d8d8"
set xrange [-0.5:channels - 0.5]
set xtics out nomirror
set ytics out nomirror
set xzeroaxis lt -1 lw 0.5
if (strstrt(logscale, "x")) { set logscale x; set xrange [0.5:channels] }
if (strstrt(logscale, "y")) { set logscale y }
set key outside right top vertical reverse Left samplen 1.5 spacing 1.2

# Outliers drawn last, wider and with a dot, so that a neighbour cannot hide them.
# a few channels get broad lines, thousands get hairlines that do not merge
line_width = channels <= 256 ? 3 : 1
plot data_file using 1:($3 > 0 ? NaN : $2) with impulses lw line_width lc rgb bar_color \
		title "other channels", \
	'' using 1:($3 > 0 ? $2 : NaN) with impulses lw line_width + 1 lc rgb outlier_color notitle, \
	'' using 1:($3 > 0 ? $2 : NaN) with points pt 7 ps 0.7 lc rgb outlier_color \
		title "outlier channel"
