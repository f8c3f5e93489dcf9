/* Walking Query API replies by local name: EC2 and CloudWatch put every
 * element in a default namespace that differs per API version. */
#include "aws.h"

#include <string.h>

static bool named(xmlNodePtr n, const char *name, size_t len) {
    return n->type == XML_ELEMENT_NODE && strlen((const char *)n->name) == len &&
           !memcmp(n->name, name, len);
}

static xmlNodePtr child(xmlNodePtr node, const char *name, size_t len) {
    for (xmlNodePtr n = node->children; n; n = n->next)
        if (named(n, name, len)) return n;
    return NULL;
}

xmlNodePtr aws_xml_find(xmlNodePtr node, const char *path) {
    while (node && *path) {
        size_t len = strcspn(path, "/");
        node = child(node, path, len);
        path += len;
        if (*path == '/') path++;
    }
    return node;
}

xmlNodePtr aws_xml_next(xmlNodePtr node, const char *name) {
    if (!node) return NULL;
    size_t len = strlen(name);
    for (xmlNodePtr n = node->next; n; n = n->next)
        if (named(n, name, len)) return n;
    return NULL;
}

const char *aws_xml_text(xmlNodePtr node, const char *path) {
    node = aws_xml_find(node, path);
    if (!node) return NULL;
    xmlNodePtr t = node->children;
    if (!t) return "";
    if (t->next || (t->type != XML_TEXT_NODE && t->type != XML_CDATA_SECTION_NODE)) return NULL;
    return (const char *)t->content;
}

const char *aws_xml_tag(xmlNodePtr node, const char *key) {
    AWS_XML_FOREACH(item, aws_xml_find(node, "tagSet"), "item") {
        const char *k = aws_xml_text(item, "key");
        if (k && !strcmp(k, key)) return aws_xml_text(item, "value");
    }
    return NULL;
}
