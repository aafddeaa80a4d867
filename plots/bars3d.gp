# bars3d.gp: the layer x channel bars of one site, outlier channels in red
# (trace-plot bars3d; after the RecurrentGemma outlier study's Figure 4.2).
#
# trace-plot sets, before this template:
#   term_kind        png, svg, pdf or tex
#   small_font       ',SIZE': the font of the lines under the title
#   title_text, subtitle_text, xlabel_text, ylabel_text, zlabel_text
#   logscale         axes to draw on a log scale ("" or e.g. "z")
#   data_file        one row per bar: layer, first_channel, last_channel,
#                    value (the largest |value| of the bar's channels, signed),
#                    outlier (1 if any of them is an outlier channel)
#   legend_text      what red means (in red, under the subtitle)
#   channels, first_layer, last_layer, bin_channels

bar_color = "#4c72b0"
outlier_color = "#d62728"

# the title and a subtitle under it, placed in character heights from the
# top so that they stay apart at any --size
set label 1 title_text noenhanced at screen 0.5, screen 1 offset 0, char -1.3 center
small_text = term_kind eq "tex" ? '\footnotesize ' : ""
set label 2 small_text.subtitle_text noenhanced at screen 0.5, screen 1 offset 0, char -2.7 center \
	font small_font
set label 3 small_text.legend_text noenhanced at screen 0.5, screen 1 offset 0, char -3.9 center font small_font \
	tc rgb outlier_color
set tmargin 4
set xlabel xlabel_text noenhanced offset 0, -0.5
set ylabel ylabel_text noenhanced offset 1, -0.5
set zlabel zlabel_text noenhanced rotate parallel offset -1, 0

# The study's view: channels along the front, layers going back.
set view 60, 40, 1.05, 1.0
set origin 0, -0.04
set xyplane at 0
set grid xtics ytics ztics lc rgb "#d8d8d8" lw 0.5
set xrange [0:channels]
set yrange [first_layer - 0.5:last_layer + 0.5]
set xtics out nomirror offset 0, -0.3
layers = last_layer - first_layer + 1
layer_step = layers > 16 ? 5 : layers > 8 ? 2 : 1
set ytics layer_step out nomirror
set ztics out nomirror
set format z "%g"
if (strstrt(logscale, "x")) { set logscale x }
if (strstrt(logscale, "z")) {
	# bars stand on the decade below the smallest value
	stats data_file using (abs($4)) nooutput
	z_floor = STATS_min > 0 ? 10 ** floor(log10(STATS_min)) : 1e-3
	set logscale z
	set zrange [z_floor:*]
	set xyplane at z_floor
}

# Bars are 3D boxes drawn back to front, faintly edged so that neighbours
# stay apart, lit softly so that red stays red.
outlier_rgb = int("0x".outlier_color[2:7])
bar_rgb = int("0x".bar_color[2:7])
set boxwidth bin_channels absolute
# thin bars along the layers as well, unless there are only a few layers
set boxdepth layers >= 8 ? 0.6 : 0.25
set style fill solid 1.0 border lc rgb "#a0000000"
set pm3d depthorder base
set pm3d lighting primary 0.2 specular 0.0

unset key
# heights are magnitudes: a signed statistic (mean) would hide the axes
# behind bars going down
splot data_file using (($2 + $3 + 1) / 2.0):1:(abs($4)):($5 > 0 ? outlier_rgb : bar_rgb) \
	with boxes fc rgb variable notitle
