/* A real RTSP server for the tests, on GStreamer's RTSP server library (libgstrtspserver-1.0).
 *
 *   rtsp_server PORT [--user NAME:PASS] [--switch-after SECONDS WIDTHxHEIGHT] MOUNT=LAUNCH ...
 *
 * Each MOUNT (e.g. /h264) serves the media that LAUNCH (gst-launch syntax, payloader named pay0)
 * makes, to every client separately. --user requires HTTP Basic credentials on every mount.
 * --switch-after sets the caps of the element named "res" in each client's media to the new size
 * that many seconds after the media starts: a camera that changes resolution mid-stream.
 * Prints "ready" on stdout once it listens. Built by tests/rtsp_fixtures.py with gcc.
 */
#include <gst/gst.h>
#include <gst/rtsp-server/rtsp-server.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static guint gSwitchAfter = 0;
static int gWidth = 0, gHeight = 0;

static gboolean switchSize(gpointer data)
{
    GstElement* filter = GST_ELEMENT(data);
    GstCaps* caps = gst_caps_new_simple("video/x-raw", "width", G_TYPE_INT, gWidth, "height", G_TYPE_INT,
                                        gHeight, NULL);
    g_object_set(filter, "caps", caps, NULL);
    gst_caps_unref(caps);
    return G_SOURCE_REMOVE;
}

static void onConfigure(GstRTSPMediaFactory* factory, GstRTSPMedia* media, gpointer user)
{
    (void) factory;
    (void) user;
    GstElement* top = gst_rtsp_media_get_element(media);
    GstElement* filter = gst_bin_get_by_name_recurse_up(GST_BIN(top), "res");
    if (filter != NULL)
    {
        g_timeout_add_seconds_full(G_PRIORITY_DEFAULT, gSwitchAfter, switchSize, filter, gst_object_unref);
    }
    gst_object_unref(top);
}

int main(int argc, char** argv)
{
    gst_init(&argc, &argv);
    if (argc < 3)
    {
        fprintf(stderr, "usage: %s PORT [--user NAME:PASS] [--switch-after S WxH] MOUNT=LAUNCH ...\n", argv[0]);
        return 2;
    }
    GstRTSPServer* server = gst_rtsp_server_new();
    gst_rtsp_server_set_address(server, "127.0.0.1");
    gst_rtsp_server_set_service(server, argv[1]);
    GstRTSPMountPoints* mounts = gst_rtsp_server_get_mount_points(server);
    char const* user = NULL;
    for (int i = 2; i < argc; ++i)
    {
        if (strcmp(argv[i], "--user") == 0 && i + 1 < argc)
        {
            user = argv[++i];
            continue;
        }
        if (strcmp(argv[i], "--switch-after") == 0 && i + 2 < argc)
        {
            gSwitchAfter = (guint) atoi(argv[++i]);
            if (sscanf(argv[++i], "%dx%d", &gWidth, &gHeight) != 2)
            {
                fprintf(stderr, "bad size %s\n", argv[i]);
                return 2;
            }
            continue;
        }
        char const* eq = strchr(argv[i], '=');
        if (eq == NULL || argv[i][0] != '/')
        {
            fprintf(stderr, "expected MOUNT=LAUNCH, got %s\n", argv[i]);
            return 2;
        }
        gchar* mount = g_strndup(argv[i], (gsize) (eq - argv[i]));
        GstRTSPMediaFactory* factory = gst_rtsp_media_factory_new();
        gchar* launch = g_strdup_printf("( %s )", eq + 1);
        gst_rtsp_media_factory_set_launch(factory, launch);
        g_free(launch);
        gst_rtsp_media_factory_set_shared(factory, FALSE);
        if (gSwitchAfter > 0)
        {
            g_signal_connect(factory, "media-configure", G_CALLBACK(onConfigure), NULL);
        }
        if (user != NULL)
        {
            gst_rtsp_media_factory_add_role(factory, "viewer", GST_RTSP_PERM_MEDIA_FACTORY_ACCESS, G_TYPE_BOOLEAN,
                                            TRUE, GST_RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, G_TYPE_BOOLEAN, TRUE, NULL);
        }
        gst_rtsp_mount_points_add_factory(mounts, mount, factory);
        g_free(mount);
    }
    g_object_unref(mounts);
    if (user != NULL)
    {
        char const* colon = strchr(user, ':');
        if (colon == NULL)
        {
            fprintf(stderr, "--user takes NAME:PASS\n");
            return 2;
        }
        gchar* name = g_strndup(user, (gsize) (colon - user));
        GstRTSPAuth* auth = gst_rtsp_auth_new();
        GstRTSPToken* token = gst_rtsp_token_new(GST_RTSP_TOKEN_MEDIA_FACTORY_ROLE, G_TYPE_STRING, "viewer", NULL);
        gchar* basic = gst_rtsp_auth_make_basic(name, colon + 1);
        gst_rtsp_auth_add_basic(auth, basic, token);
        g_free(basic);
        g_free(name);
        gst_rtsp_token_unref(token);
        gst_rtsp_server_set_auth(server, auth);
        g_object_unref(auth);
    }
    if (gst_rtsp_server_attach(server, NULL) == 0)
    {
        fprintf(stderr, "cannot listen on 127.0.0.1:%s\n", argv[1]);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    g_main_loop_run(g_main_loop_new(NULL, FALSE));
    return 0;
}
